"""Learning curve: nested review shares, settings, and an end-to-end run with resume
(the tiny model and TF-IDF on the toy corpus)."""

from __future__ import annotations

import json

import pytest

from scrclf.errors import SettingsError
from scrclf.training import learning_curve as lc
from tests.helpers import CONFIG_DIR


def test_shares_are_nested_by_review_and_seeded():
    reviews = [f"R{i:02d}" for i in range(10) for _ in range(3)]  # items, 3 per review
    for seed in range(3):
        order = lc.review_order(reviews, seed)
        assert sorted(order) == sorted(set(reviews))
        assert order == lc.review_order(list(reversed(reviews)), seed)  # input order is moot
        shares = [lc.reviews_for(order, f) for f in (0.25, 0.5, 0.75, 1.0)]
        assert [len(s) for s in shares] == [3, 5, 8, 10]
        assert shares[0] < shares[1] < shares[2] < shares[3]
    assert lc.review_order(reviews, 0) != lc.review_order(reviews, 1)
    assert lc.reviews_for(["A", "B"], 0.01) == {"A"}  # never an empty share


def test_settings_are_checked():
    with pytest.raises(SettingsError, match="fractions"):
        lc.CurveSettings.with_options({"fractions": [0.0, 0.5]}, CONFIG_DIR)
    with pytest.raises(SettingsError, match="unknown system 'bert'"):
        lc.CurveSettings.with_options({"systems": ["model", "bert"]}, CONFIG_DIR)
    with pytest.raises(SettingsError, match="n_seeds"):
        lc.CurveSettings.with_options({"n_seeds": 0}, CONFIG_DIR)
    curve = lc.CurveSettings.with_options({"fractions": [1, 0.5]}, CONFIG_DIR)
    assert curve.fractions == (0.5, 1.0)
    assert curve.systems == ("model", "tfidf_logreg")


@pytest.mark.slow
def test_end_to_end_with_resume(toy_corpus, tmp_path, monkeypatch):
    import scrclf.training as training

    overrides = [
        "model=tiny",
        f"data.dir={toy_corpus}",
        "trainer.max_epochs=1",
        "trainer.batch_size=16",
        "trainer.learning_rate=5e-3",
        "trainer.logging_steps=50",
    ]
    options = {
        "fractions": [0.5, 1.0],
        "n_seeds": 1,
        "train_overrides": overrides,
        "bootstrap": {"resamples": 50, "seed": 0, "confidence": 0.9},
    }
    curve = lc.CurveSettings.with_options(options, CONFIG_DIR)
    out = tmp_path / "curve"
    trained = []
    real_train = training.train

    def counting_train(cfg, *args, **kwargs):
        trained.append(cfg.data.splits.train)
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(training, "train", counting_train)
    report = lc.run_learning_curve(curve, out, configs=CONFIG_DIR)

    assert len(trained) == 2
    assert report["points_done"] == report["points_planned"] == 4
    assert report["data"]["train_reviews"] == 12 and report["data"]["eval_reviews"] == 4
    for name in ("learning_curve.json", "learning_curve.md", "learning_curve.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "work").exists()  # subsets and run folders are removed
    rows = {(r["system"], r["fraction"]): r for r in report["rows"]}
    assert set(rows) == {(s, f) for s in ("model", "tfidf_logreg") for f in (0.5, 1.0)}
    assert rows["model", 0.5]["train_reviews"] == 6 and rows["model", 1.0]["train_reviews"] == 12
    assert rows["model", 0.5]["train_items"] == 120
    for point in report["points"]:
        low, high = point["mean_macro_f1_interval"]
        assert 0 <= low <= high <= 1
        # one seed: the row is that point, its interval the point's own
        row = rows[point["system"], point["fraction"]]
        assert row["mean_macro_f1"] == pytest.approx(point["mean_macro_f1"], abs=1e-5)
        # (rows are computed from the replicates as stored, rounded to 6 decimals)
        assert row["mean_macro_f1_interval"] == pytest.approx([low, high], abs=1e-5)
    md = (out / "learning_curve.md").read_text()
    assert "| model | 0.5 | 6 | 120 | 1 |" in md
    assert "model=tiny" in md

    # Resume: the same settings measure nothing again; a new share measures only itself.
    stored = json.loads((out / "points" / "model" / "f0.5_s0.json").read_text())
    again = lc.run_learning_curve(curve, out, configs=CONFIG_DIR)
    assert len(trained) == 2
    assert again["rows"] == report["rows"]
    more = lc.CurveSettings.with_options(
        {**options, "fractions": [0.25, 0.5, 1.0], "systems": ["model"]}, CONFIG_DIR
    )
    lc.run_learning_curve(more, out, configs=CONFIG_DIR)
    assert len(trained) == 3 and "f0.25_s0" in trained[-1]
    assert json.loads((out / "points" / "model" / "f0.5_s0.json").read_text()) == stored

    # Other training settings do not mix into the same curve.
    changed = lc.CurveSettings.with_options(
        {**options, "train_overrides": [*overrides, "trainer.max_epochs=2"]}, CONFIG_DIR
    )
    with pytest.raises(SettingsError, match="train_overrides differ"):
        lc.run_learning_curve(changed, out, configs=CONFIG_DIR)
    assert len(trained) == 3
