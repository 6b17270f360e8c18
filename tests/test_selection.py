"""The model-selection study: study files are checked, runs are trained or reused, scored
beside the baseline with the same resamples, and the choice is made on validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scrclf.errors import SettingsError
from scrclf.training.selection import Variant, read_study, run_study, select


def _study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_study_file_is_checked(tmp_path):
    with pytest.raises(SettingsError, match="unknown keys"):
        read_study(_study(tmp_path, "variants: [{name: a}]\nextra: 1\n"))
    with pytest.raises(SettingsError, match="distinct"):
        read_study(_study(tmp_path, "variants: [{name: a}, {name: a}]\n"))
    with pytest.raises(SettingsError, match="seeds"):
        read_study(_study(tmp_path, "variants: [{name: a, seeds: [x]}]\n"))
    with pytest.raises(SettingsError, match="no variants"):
        read_study(_study(tmp_path, "name: s\n"))
    study = read_study(
        _study(tmp_path, "time_budget_s: 60\nvariants: [{name: a, overrides: ['seed=1']}]\n")
    )
    assert study.variants[0].seeds == [42] and study.time_budget_s == 60


def test_selection_uses_validation_and_the_time_budget():
    def row(name, val, test, time_s):
        return {
            "variant": name,
            "validation": {"mean_macro_f1": val},
            "test": {"mean_macro_f1": test},
            "training": {"time_to_best_s": time_s},
        }

    rows = [row("fast", 0.80, 0.90, 100), row("slow", 0.85, 0.70, 900)]
    assert select(rows, None)["variant"] == "slow"  # best validation, whatever test says
    assert select(rows, 600)["variant"] == "fast"
    assert select(rows, 50) is None


def test_selection_compares_variants_on_the_seeds_they_share():
    def row(name, seed, val):
        return {
            "variant": name,
            "seed": seed,
            "validation": {"mean_macro_f1": val},
            "test": {"mean_macro_f1": val},
            "training": {"time_to_best_s": 100.0},
        }

    three = [row("three", 42, 0.91), row("three", 43, 0.86), row("three", 44, 0.86)]
    # one seed at 0.90 beats three seeds' mean (0.877) but not their 0.91 on the same seed
    chosen = select([*three, row("one", 42, 0.90)], None)
    assert chosen["variant"] == "three" and chosen["seeds"] == 3
    assert "seeds they share" in chosen["by"]
    assert select([*three, row("one", 42, 0.92)], None)["variant"] == "one"
    # no shared seed: the means decide
    assert select([*three, row("other", 7, 0.88)], None)["variant"] == "other"
    # a cycle (a > b on seed 2, b > c on 3, c > a on 1): the best mean
    cycle = [
        row("a", 1, 0.80),
        row("a", 2, 0.90),
        row("b", 2, 0.85),
        row("b", 3, 0.95),
        row("c", 3, 0.90),
        row("c", 1, 0.86),
    ]
    assert select(cycle, None)["variant"] == "b"


def test_study_trains_missing_runs_reuses_finished_ones_and_writes_a_table(
    tiny_run, toy_corpus, tmp_path
):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "reused-s42")
    trained: list[tuple[str, int]] = []

    def trainer(variant: Variant, seed: int, out: Path) -> None:
        trained.append((variant.name, seed))
        shutil.copytree(tiny_run, out)

    study = read_study(
        _study(
            tmp_path,
            "bootstrap: {resamples: 50}\n"
            "variants:\n"
            "  - {name: reused, description: already trained}\n"
            "  - {name: fresh, description: trained now, seeds: [1, 2]}\n",
        )
    )
    result = run_study(study, runs, tmp_path / "out", data_dir=toy_corpus, trainer=trainer)
    assert trained == [("fresh", 1), ("fresh", 2)]
    assert [r["variant"] for r in result["runs"]] == ["reused", "fresh", "fresh"]
    first = result["runs"][0]["test"]
    themes = first["tasks"]["themes"]
    assert 0 <= themes["micro_f1"] <= 1
    low, high = themes["micro_f1_interval"]
    assert low <= themes["micro_f1"] <= high
    # the paired gap is the difference to the baseline's own score on the same data
    base = result["baseline_scores"]["test"]["themes"]["micro_f1"]
    assert themes["gap_micro_f1"][0] == pytest.approx(themes["micro_f1"] - base)
    assert themes["per_item"] >= 1.0  # a primary theme for every item
    assert 0 <= themes["primary_accuracy"] <= 1
    saved = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert saved["selected"]["by"].startswith("validation")
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| reused | 42 |" in table and "| fresh | 2 |" in table
    assert "| reused | 42 | F1 thresholds |" in table and "| reused | 42 | codebook |" in table
    assert str(tmp_path) not in json.dumps(saved)


def test_no_train_skips_missing_runs(tiny_run, toy_corpus, tmp_path):
    study = read_study(_study(tmp_path, "bootstrap: {resamples: 20}\nvariants: [{name: a}]\n"))
    result = run_study(study, tmp_path / "runs", tmp_path / "out", train=False, data_dir=toy_corpus)
    assert result["runs"] == [] and result["selected"] is None


def test_scoring_without_the_runs_keeps_their_earlier_rows(tiny_run, toy_corpus, tmp_path):
    """A study scored again where some runs are not on disk keeps those runs' earlier rows
    when they were trained with the same recipe (overrides composing to the same config),
    and drops them when the recipe or the scored data changed."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    shutil.copytree(tiny_run, runs / "a-s42")
    shutil.copytree(tiny_run, runs / "b-s42")
    text = (
        "bootstrap: {resamples: 20}\n"
        "variants: [{name: a, overrides: ['seed=1']}, {name: b}]\n"
        "ensembles: [{name: ab, members: [a-s42, b-s42]}]\n"
    )
    first = run_study(
        read_study(_study(tmp_path, text)), runs, out, train=False, data_dir=toy_corpus
    )
    assert [r["variant"] for r in first["runs"]] == ["a", "b", "ab"]
    shutil.rmtree(runs / "a-s42")

    # 'a' pins a value the config already has: the same recipe, kept as the study writes it.
    pinned = text.replace("['seed=1']", "['seed=1', 'trainer.max_epochs=4']")
    study = read_study(_study(tmp_path, pinned))
    again = run_study(study, runs, out, train=False, data_dir=toy_corpus)
    assert [r["variant"] for r in again["runs"]] == ["a", "b", "ab"]
    assert again["runs"][0]["test"] == first["runs"][0]["test"]
    assert again["runs"][0]["overrides"] == ["seed=1", "trainer.max_epochs=4"]
    assert again["runs"][2]["test"] == first["runs"][2]["test"]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [r["variant"] for r in saved["runs"]] == ["a", "b", "ab"]

    # Another recipe under the same name is not the run that was scored: dropped.
    changed = text.replace("['seed=1']", "['seed=1', 'trainer.max_epochs=2']")
    study = read_study(_study(tmp_path, changed))
    dropped = run_study(study, runs, out, train=False, data_dir=toy_corpus)
    assert [r["variant"] for r in dropped["runs"]] == ["b"]

    # Earlier results of other data are not kept either.
    run_study(study, runs, tmp_path / "other", train=False, data_dir=toy_corpus)
    other = json.loads((out / "results.json").read_text(encoding="utf-8"))
    other["data"]["test"]["n_items"] += 1
    (tmp_path / "other" / "results.json").write_text(json.dumps(first | {"data": other["data"]}))
    study = read_study(_study(tmp_path, text))
    fresh = run_study(study, runs, tmp_path / "other", train=False, data_dir=toy_corpus)
    assert [r["variant"] for r in fresh["runs"]] == ["b"]


def test_render_reselects_from_saved_results(tiny_run, toy_corpus, tmp_path):
    from scrclf.training.selection import rerender

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a-s42")
    text = "bootstrap: {resamples: 20}\ntime_budget_s: 0.001\nvariants: [{name: a}]\n"
    study = read_study(_study(tmp_path, text))
    result = run_study(study, runs, tmp_path / "out", train=False, data_dir=toy_corpus)
    assert result["selected"] is None  # no tiny run is that fast
    relaxed = read_study(_study(tmp_path, "variants: [{name: a}]\n"))
    again = rerender(relaxed, tmp_path / "out")
    assert again["selected"]["variant"] == "a"
    assert "**a**" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    with pytest.raises(SettingsError, match="no study results"):
        rerender(relaxed, tmp_path / "nowhere")


def test_scoring_again_reuses_the_forward_passes_of_the_same_texts(
    tiny_run, toy_corpus, tmp_path, monkeypatch
):
    from scrclf.training import selection

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a-s42")
    study = read_study(_study(tmp_path, "bootstrap: {resamples: 20}\nvariants: [{name: a}]\n"))
    first = run_study(study, runs, tmp_path / "out", train=False, data_dir=toy_corpus)
    cache = runs / "a-s42" / selection.LOGITS_CACHE
    assert cache.is_file()

    calls: list[str] = []
    real = selection.model_logits

    def counted(*args, **kwargs):
        calls.append(kwargs.get("desc", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "model_logits", counted)
    again = run_study(study, runs, tmp_path / "out2", train=False, data_dir=toy_corpus)
    assert calls == []
    assert again["runs"][0]["test"] == first["runs"][0]["test"]
    # Other texts (a changed corpus) do not match the saved fingerprint: computed afresh.
    with np.load(cache) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["fingerprint"] = np.array("another corpus")
    np.savez(cache, **arrays)
    third = run_study(study, runs, tmp_path / "out3", train=False, data_dir=toy_corpus)
    assert calls and third["runs"][0]["test"] == first["runs"][0]["test"]


def test_folds_split_reviews_evenly_and_whole(tmp_path):
    from scrclf.data.records import Record
    from scrclf.training.folds import assign_folds, write_folds

    sizes = {f"R{i}": 3 + (i * 7) % 11 for i in range(23)}
    folds = assign_folds(sizes, 4, seed=1)
    assert folds == assign_folds(sizes, 4, seed=1)  # deterministic
    assert set(folds) == set(sizes) and set(folds.values()) == {0, 1, 2, 3}
    items = [sum(n for r, n in sizes.items() if folds[r] == f) for f in range(4)]
    assert max(items) - min(items) <= max(sizes.values())
    assert assign_folds(sizes, 4, seed=2) != folds
    with pytest.raises(ValueError):
        assign_folds({"a": 1}, 2, 0)

    records = [
        Record({"id": f"{r}-{j}", "review_id": r, "text": f"item {j}"}, "toy", 0)
        for r, n in sizes.items()
        for j in range(n)
    ]
    files = write_folds(records, "review_id", 4, 1, tmp_path / "folds")
    seen: list[str] = []
    for train_file, held_file in files:
        held = [json.loads(x) for x in held_file.read_text(encoding="utf-8").splitlines()]
        rest = [json.loads(x) for x in train_file.read_text(encoding="utf-8").splitlines()]
        assert {r["review_id"] for r in held}.isdisjoint({r["review_id"] for r in rest})
        assert len(held) + len(rest) == len(records)
        seen += [r["id"] for r in held]
    assert sorted(seen) == sorted(r.data["id"] for r in records)
    stamp = files[0][1].stat().st_mtime_ns
    write_folds(records, "review_id", 4, 1, tmp_path / "folds")
    assert files[0][1].stat().st_mtime_ns == stamp  # unchanged files are not rewritten


def test_study_file_out_of_fold_is_checked(tmp_path):
    base = "variants: [{name: a, seeds: [1]}]\n"
    with pytest.raises(SettingsError, match="not a variant"):
        read_study(_study(tmp_path, base + "out_of_fold: {variant: b, seed: 1}\n"))
    with pytest.raises(SettingsError, match="not a seed"):
        read_study(_study(tmp_path, base + "out_of_fold: {variant: a, seed: 2}\n"))
    with pytest.raises(SettingsError, match="at least 2"):
        read_study(_study(tmp_path, base + "out_of_fold: {variant: a, seed: 1, folds: 1}\n"))
    with pytest.raises(SettingsError, match="unknown keys"):
        read_study(_study(tmp_path, base + "out_of_fold: {variant: a, seed: 1, k: 3}\n"))
    plan = read_study(_study(tmp_path, base + "out_of_fold: {variant: a, seed: 1}\n")).out_of_fold
    assert plan is not None and plan.folds == 5 and plan.split_seed == 0


def test_out_of_fold_decisions_train_fold_runs_and_score_the_run(tiny_run, toy_corpus, tmp_path):
    from scrclf.training.folds import train_fold

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "a-s42")
    trained: list[Path] = []

    def fold_trainer(overrides, train_file, held_file, seed, out):
        trained.append(out)
        train_fold(overrides, train_file, held_file, seed, out)

    text = (
        "bootstrap: {resamples: 20}\n"
        "variants: [{name: a, overrides: [model=tiny, trainer.max_epochs=1, "
        "trainer.learning_rate=5e-3, trainer.logging_steps=50]}]\n"
        "out_of_fold: {variant: a, seed: 42, folds: 2}\n"
    )
    study = read_study(_study(tmp_path, text))
    result = run_study(
        study, runs, tmp_path / "out", data_dir=toy_corpus, fold_trainer=fold_trainer
    )
    oof = result["out_of_fold"]
    assert len(trained) == 2 and all((p / "metrics.json").is_file() for p in trained)
    n = sum(1 for s in ("train", "validation") for _ in open(toy_corpus / f"{s}.jsonl"))
    assert oof["items"] == n and oof["folds"] == 2
    themes = oof["test"]["tasks"]["themes"]
    assert 0 <= themes["micro_f1"] <= 1 and themes["per_item"] >= 1.0
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| out of fold |" in table and "| validation |" in table
    # A second scoring reuses the fold runs and their held-out logits.
    trained.clear()
    again = run_study(study, runs, tmp_path / "out2", data_dir=toy_corpus, train=False)
    assert trained == [] and again["out_of_fold"]["test"] == oof["test"]


def test_study_file_ensembles_are_checked(tmp_path):
    head = "variants: [{name: a, seeds: [1, 2]}, {name: b}]\n"
    with pytest.raises(SettingsError, match="not a run of the study"):
        read_study(_study(tmp_path, head + "ensembles: [{name: e, members: [a-s1, a-s3]}]\n"))
    with pytest.raises(SettingsError, match="at least two"):
        read_study(_study(tmp_path, head + "ensembles: [{name: e, members: [a-s1]}]\n"))
    with pytest.raises(SettingsError, match="taken"):
        read_study(_study(tmp_path, head + "ensembles: [{name: b, members: [a-s1, b-s42]}]\n"))
    with pytest.raises(SettingsError, match="unknown keys"):
        read_study(_study(tmp_path, head + "ensembles: [{name: e, members: [a-s1, a-s2], x: 1}]\n"))
    study = read_study(_study(tmp_path, head + "ensembles: [{name: e, members: [a-s1, b-s42]}]\n"))
    assert study.ensembles[0].members == ["a-s1", "b-s42"]


def test_average_outputs_means_encoder_and_wide_logits_apart():
    from scrclf.training.selection import RunOutputs, average_outputs

    def run(deep, wide):
        return RunOutputs(
            deep={"test": [np.full((2, 3), deep)]},
            wide={"test": [np.full((2, 3), wide)]} if wide is not None else None,
        )

    mean = average_outputs([run(1.0, 4.0), run(3.0, 0.0)])
    assert np.allclose(mean.deep["test"][0], 2.0) and np.allclose(mean.wide["test"][0], 2.0)
    assert average_outputs([run(1.0, None), run(2.0, None)]).wide is None
    with pytest.raises(SettingsError, match="with and without"):
        average_outputs([run(1.0, 1.0), run(2.0, None)])


def test_annotated_count_scores_gives_each_item_its_number_of_best_labels():
    from scrclf.tasks import TaskSpec
    from scrclf.training.selection import annotated_count_scores

    task = TaskSpec(name="t", column="t", type="multi_label", labels=["a", "b", "c"])
    targets = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)
    # Item 0 ranks b, c, a; item 1 ranks c first; item 2 ranks b first.
    logits = np.array([[0.5, 2.0, 1.0], [0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    scores = annotated_count_scores(task, logits, targets)
    # Chosen: {b, c}, {c}, {b}: tp 2, fp 2, fn 2.
    assert scores["micro_f1"] == pytest.approx(0.5)
    assert scores["per_item"] == pytest.approx(4 / 3)
    assert scores["macro_f1"] == pytest.approx((0.0 + 2 / 3 + 2 / 3) / 3)
    perfect = annotated_count_scores(task, targets * 5.0, targets)
    assert perfect["micro_f1"] == 1.0 and perfect["share_gap_max"] == 0.0


def test_an_ensemble_of_runs_is_scored_but_never_selected(tiny_run, toy_corpus, tmp_path):
    runs = tmp_path / "runs"
    for name in ("a-s1", "a-s2"):
        shutil.copytree(tiny_run, runs / name)
    study = read_study(
        _study(
            tmp_path,
            "bootstrap: {resamples: 20}\n"
            "variants: [{name: a, seeds: [1, 2]}]\n"
            "ensembles: [{name: both, description: the two seeds, members: [a-s1, a-s2]}]\n",
        )
    )
    result = run_study(study, runs, tmp_path / "out", train=False, data_dir=toy_corpus)
    by_name = {r["variant"]: r for r in result["runs"]}
    ensemble, member = by_name["both"], result["runs"][0]
    assert ensemble["ensemble"] and ensemble["members"] == ["a-s1", "a-s2"]
    # Two copies of one run average to that run: the same scores.
    assert ensemble["test"] == member["test"]
    assert ensemble["training"]["time_to_best_s"] == pytest.approx(
        2 * member["training"]["time_to_best_s"]
    )
    assert result["selected"]["variant"] == "a"
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| both | mean of a-s1, a-s2 |" in table
    assert "| a | 1 | annotated count |" in table
    known = member["test_annotated_count"]
    assert known["per_item"] == pytest.approx(known["annotated_per_item"])
