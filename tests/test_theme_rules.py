"""Decision rules for how many themes an item gets, probed beside the codebook's rule."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from scrclf.calibration import calibrate, decide, probabilities
from scrclf.errors import SettingsError
from scrclf.evaluation.theme_rules_probe import (
    CEILING,
    RULES,
    Items,
    fit_rule,
    format_theme_rules,
    macro_f1,
    micro_f1,
    probe_theme_rules,
    text_features,
    top_k,
)
from scrclf.tasks import TaskSet, TaskSpec

LABELS = [f"t{i}" for i in range(6)]


def _task() -> TaskSpec:
    return TaskSpec(
        name="themes",
        type="multi_label",
        labels=LABELS,
        max_labels=3,
        share_tolerance=0.02,
        count_calibration=True,
    )


def _items(n: int, seed: int) -> Items:
    """Scores that rank the themes perfectly; each item's number of themes (1 to 3) is
    unrelated to its scores but written in its ``length`` features."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, len(LABELS)))
    counts = rng.integers(1, 4, n)
    targets = top_k(logits, counts)
    length = np.column_stack([counts, rng.normal(size=n), rng.normal(size=n)]).astype(float)
    words = np.log(np.full((n, 3), 1 / 3))
    return Items(logits, targets, {"length": length, "words": words})


def test_top_k_and_the_f1_scores_agree_with_their_definitions():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    assert top_k(scores, np.array([2, 1])).tolist() == [[0, 1, 1], [1, 0, 0]]
    assert top_k(scores, np.array([2, 1]), first=np.array([0, 2])).tolist() == [
        [1, 1, 0],
        [0, 0, 1],
    ]
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, (40, 5)), rng.integers(0, 2, (40, 5))
    assert micro_f1(y, p) == pytest.approx(f1_score(y, p, average="micro", zero_division=0))
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", zero_division=0))


def test_the_codebook_rule_is_the_tasks_own_fitted_decisions():
    fit, scored = _items(400, 1), _items(200, 2)
    expected = _task()
    calibrate(TaskSet([expected]), [fit.logits], [fit.targets])
    want = decide(expected, probabilities(expected, scored.logits))
    assert np.array_equal(fit_rule(_task(), "codebook", fit)(scored), want)


def test_a_count_written_in_the_text_features_is_learnt_and_the_scores_alone_miss_it():
    fit, scored = _items(600, 3), _items(300, 4)
    task = _task()
    by_length = fit_rule(task, "count_length", fit)(scored)
    assert np.array_equal(by_length.sum(axis=1), scored.targets.sum(axis=1))
    best = micro_f1(scored.targets, by_length)
    for rule in ("codebook", "global", "count_scores"):
        assert micro_f1(scored.targets, fit_rule(task, rule, fit)(scored)) < best - 0.05
    ceiling = fit_rule(task, CEILING, fit)(scored)
    assert np.array_equal(ceiling.sum(axis=1), scored.targets.sum(axis=1))


def test_every_rule_keeps_the_codebooks_bounds_and_unknown_rules_are_refused():
    fit, scored = _items(300, 5), _items(100, 6)
    for rule in RULES:
        pred = fit_rule(_task(), rule, fit)(scored)
        assert pred.shape == scored.targets.shape
        assert (pred.sum(axis=1) >= 1).all() and (pred.sum(axis=1) <= 3).all()
        # the top score is always among the themes (the primary)
        assert pred[np.arange(len(pred)), scored.logits.argmax(axis=1)].all()
    with pytest.raises(SettingsError, match="unknown theme rule"):
        fit_rule(_task(), "count_guess", fit)


def test_text_features_measure_length_and_bundling():
    rows = text_features(["Train staff.", "Review, audit; and report and share."])
    assert rows[0].tolist() == [pytest.approx(np.log1p(2)), 0.0, 0.0]
    assert rows[1].tolist() == [pytest.approx(np.log1p(6)), 1.0, 3.0]


def test_the_probe_scores_every_rule_of_a_saved_model(tiny_export):
    corpus = tiny_export.corpus
    result = probe_theme_rules(
        [tiny_export.run_dir / "model"],
        corpus / "train.jsonl",
        corpus / "validation.jsonl",
        corpus / "test.jsonl",
        resamples=50,
        cv_repeats=1,
    )
    rows = {r["rule"]: r for r in result["rows"]}
    assert list(rows) == [*RULES, CEILING]
    assert rows[CEILING]["validation_halves"] is None
    assert rows["codebook"]["validation_halves"]["gain"] == 0.0
    for rule in RULES:
        halves = rows[rule]["validation_halves"]
        assert halves["n"] == 2 and 0 <= halves["positive"] <= 2
        lo, hi = rows[rule]["test_gap_interval"]
        assert lo <= hi
        assert 0.0 <= rows[rule]["test"]["micro_f1"] <= 1.0
    assert rows["codebook"]["test_gap_interval"] == [0.0, 0.0]
    # every toy item has at least one theme, so the ceiling predicts the annotated count
    assert rows[CEILING]["test"]["count_accuracy"] == 1.0
    assert rows[CEILING]["test"]["per_item"] == pytest.approx(rows[CEILING]["annotated_per_item"])
    by_count = result["words_by_count"]
    assert set(by_count) == {"train", "validation", "test"}
    assert sum(v["items"] for v in by_count["test"].values()) == len(
        (corpus / "test.jsonl").read_text(encoding="utf-8").splitlines()
    )
    table = format_theme_rules(result, "python benchmarks/theme_rules.py run")
    assert "Median words per item" in table
    assert table.count("| count_words |") == 1 and "Validation halves" in table


def test_the_probe_scripts_write_their_results_and_refuse_a_missing_run(
    tiny_export, tmp_path, capsys
):
    import json

    from tests.helpers import load_benchmark

    corpus, out = tiny_export.corpus, tmp_path / "out"
    common = ["--data", str(corpus), "--resamples", "20", "--out", str(out)]
    script = load_benchmark("theme_rules")
    assert script.main([str(tiny_export.run_dir), *common, "--cv-repeats", "1"]) == 0
    result = json.loads((out / "theme_rules.json").read_text(encoding="utf-8"))
    assert result["cv_repeats"] == 1 and result["resamples"] == 20
    table = (out / "theme_rules.md").read_text(encoding="utf-8")
    assert table.startswith("# How many themes") and "--cv-repeats 1" in table
    offsets = load_benchmark("class_offsets")
    assert offsets.main([str(tiny_export.run_dir), *common]) == 0
    assert (out / "class_offsets.md").read_text(encoding="utf-8").startswith("# Class offsets")
    assert script.main([str(tmp_path / "missing"), *common]) == 2
    assert "error:" in capsys.readouterr().err
