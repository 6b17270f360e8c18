"""The codebook's decision rule: a primary theme always, at most max_labels, and thresholds
shifted together so the mean label count matches the annotations; single-label tasks take
the top class after per-class offsets fitted for macro-F1."""

import numpy as np
import pytest

from scrclf.calibration import (
    calibrate,
    calibrate_label_count,
    decide,
    decide_multi_label,
    probabilities,
    shift_thresholds,
    softmax,
    tune_offsets,
)
from scrclf.errors import TaskConfigError
from scrclf.tasks import TaskSet, TaskSpec


def test_top_label_is_always_on_even_below_its_threshold():
    probs = np.array([[0.45, 0.40, 0.10], [0.9, 0.2, 0.8]])
    thresholds = [0.5, 0.3, 0.5]
    on = decide_multi_label(probs, thresholds)
    # row 0: label 1 passes its threshold, label 0 is the top score and is on as primary
    assert on[0].tolist() == [1, 1, 0]
    assert on[1].tolist() == [1, 0, 1]


def test_max_labels_keeps_the_primary_then_the_largest_margins():
    probs = np.array([[0.55, 0.52, 0.9, 0.6]])
    thresholds = [0.1, 0.5, 0.89, 0.5]
    on = decide_multi_label(probs, thresholds, max_labels=2)
    # label 2 is the top score (margin 0.01), kept; label 0 has the largest margin
    assert on[0].tolist() == [1, 0, 1, 0]


def test_shift_moves_thresholds_in_logit_space_and_stays_in_range():
    assert shift_thresholds([0.5], 0.0) == [0.5]
    up = shift_thresholds([0.5, 0.2], 1.0)
    assert up[0] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert up[1] > 0.2
    assert shift_thresholds([0.5], 50.0) == [0.99]


def test_label_count_calibration_matches_the_annotated_mean():
    rng = np.random.default_rng(0)
    n, k = 400, 6
    targets = np.zeros((n, k), dtype=int)
    targets[np.arange(n), rng.integers(0, k, n)] = 1  # one label per item
    # scores that over-predict: true labels high, two random others above 0.5 as well
    probs = np.clip(rng.uniform(0.0, 0.45, (n, k)) + 0.5 * targets, 0, 1)
    probs[np.arange(n), rng.integers(0, k, n)] += 0.3
    thresholds = [0.3] * k
    before = decide_multi_label(probs, thresholds).sum(axis=1).mean()
    moved, shift, summary = calibrate_label_count(probs, targets, thresholds, max_labels=3)
    after = decide_multi_label(probs, moved, max_labels=3).sum(axis=1).mean()
    assert before > 1.5
    assert shift > 0
    assert abs(after - 1.0) < 0.1
    assert summary["annotated_per_item"] == pytest.approx(1.0)
    assert summary["predicted_per_item_after"] == pytest.approx(after)


def test_calibrate_records_the_count_shift_only_where_asked():
    def tasks(flag):
        return TaskSet(
            [TaskSpec("t", "multi_label", ["a", "b", "c"], max_labels=3, count_calibration=flag)]
        )

    rng = np.random.default_rng(1)
    targets = (rng.uniform(size=(300, 3)) < 0.3).astype(int)
    targets[targets.sum(axis=1) == 0, 0] = 1
    logits = rng.normal(size=(300, 3)) + 2.5 * targets
    on, off = tasks(True), tasks(False)
    report_on = calibrate(on, [logits], [targets])
    report_off = calibrate(off, [logits], [targets])
    assert "count_shift" in report_on["t"] and "count_shift" not in report_off["t"]
    counts = report_on["t"]["label_count"]
    assert abs(counts["predicted_per_item_after"] - counts["annotated_per_item"]) <= abs(
        counts["predicted_per_item_before"] - counts["annotated_per_item"]
    )


def test_count_calibration_is_refused_for_single_label_tasks():
    with pytest.raises(TaskConfigError, match="count_calibration"):
        TaskSpec("e", "single_label", ["a", "b"], count_calibration=True)


def test_share_tolerance_keeps_each_label_near_its_annotated_share():
    from scrclf.calibration import tune_thresholds

    rng = np.random.default_rng(2)
    n = 1000
    targets = (rng.uniform(size=(n, 2)) < [0.3, 0.1]).astype(int)
    # noisy scores: the F1-optimal threshold gives label 1 to far more items than annotated
    probs = np.clip(0.35 * targets + rng.uniform(0, 0.7, (n, 2)), 0, 1)
    free, _ = tune_thresholds(probs, targets)
    held, how = tune_thresholds(probs, targets, share_tolerance=0.02)
    for j in range(2):
        share = (probs[:, j] >= held[j]).mean()
        assert abs(share - targets[:, j].mean()) <= 0.02 + 1e-9
    assert abs((probs[:, 1] >= free[1]).mean() - 0.1) > 0.02
    assert how == ["tuned within share tolerance"] * 2


def test_share_tolerance_falls_back_to_the_closest_share():
    from scrclf.calibration import tune_thresholds

    probs = np.array([[0.9], [0.9], [0.9], [0.9], [0.9], [0.1], [0.1], [0.1]])
    targets = np.array([[1], [1], [1], [1], [1], [1], [0], [0]])
    # no threshold gives 6/8 items: 5/8 (any threshold in (0.1, 0.9]) is the closest share
    thresholds, how = tune_thresholds(probs, targets, share_tolerance=0.01)
    assert 0.1 < thresholds[0] <= 0.9
    assert how[0].startswith("closest share")


def _skewed_single_label(seed: int = 0, n: int = 600):
    """Logits of a 3-class task whose rare classes lose items to the frequent one."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.75, 0.18, 0.07])
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.2
    logits[:, 0] += 0.8  # the frequent class scores high on every item
    return logits, y


def _macro_f1(y, pred) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", labels=[0, 1, 2], zero_division=0))


def test_class_offsets_raise_macro_f1_and_decide_on_logit_over_t_plus_offset():
    task = TaskSpec(name="e", type="single_label", labels=["a", "b", "c"], class_offsets=True)
    logits, y = _skewed_single_label()
    report = calibrate(TaskSet([task]), [logits], [y])["e"]
    assert task.offsets is not None and any(task.offsets)
    assert report["macro_f1_with_offsets"] > report["macro_f1_without_offsets"]
    # The decision is the top class of logit / T + offset, at the fitted temperature.
    probs = probabilities(task, logits)
    pred = decide(task, probs)
    np.testing.assert_array_equal(
        pred, (logits / task.temperature + np.array(task.offsets)).argmax(axis=1)
    )
    assert _macro_f1(y, pred) == pytest.approx(report["macro_f1_with_offsets"])
    assert _macro_f1(y, logits.argmax(axis=1)) == pytest.approx(report["macro_f1_without_offsets"])


def test_offsets_stay_zero_where_the_top_class_is_already_best():
    y = np.array([0, 1, 2] * 20)
    logits = np.eye(3)[y] * 5.0
    offsets, before, after = tune_offsets(softmax(logits), y)
    assert offsets == [0.0, 0.0, 0.0] and before == after == 1.0


def test_class_offsets_only_where_asked_and_only_for_single_label_tasks():
    logits, y = _skewed_single_label()
    plain = TaskSpec(name="e", type="single_label", labels=["a", "b", "c"])
    assert "offsets" not in calibrate(TaskSet([plain]), [logits], [y])["e"]
    assert plain.offsets is None
    with pytest.raises(TaskConfigError, match="single-label tasks only"):
        TaskSpec(name="m", type="multi_label", labels=["x", "y"], class_offsets=True)
    with pytest.raises(TaskConfigError, match="single-label tasks only"):
        TaskSpec(name="m", type="multi_label", labels=["x", "y"], offsets=[0.0, 1.0])
    with pytest.raises(TaskConfigError, match="offsets has 2 values for 3 labels"):
        TaskSpec(name="e", type="single_label", labels=["a", "b", "c"], offsets=[0.0, 1.0])
    with pytest.raises(TaskConfigError, match="offset of 'b' must be a finite number"):
        TaskSpec(name="e", type="single_label", labels=["a", "b", "c"], offsets=[0, "nan", 0])


def test_plain_decisions_drop_the_fitted_offsets():
    from scrclf.evaluation.baselines import plain_decisions

    task = TaskSpec(
        name="e",
        type="single_label",
        labels=["a", "b", "c"],
        class_offsets=True,
        offsets=[0.0, 2.0, 0.0],
    )
    assert plain_decisions(TaskSet([task]))["e"].offsets is None


def test_offsets_probe_scores_each_single_label_task_of_a_saved_model(tiny_export):
    from scrclf.evaluation.offsets_probe import format_offsets_probe, probe_offsets

    corpus = tiny_export.corpus
    result = probe_offsets(
        [tiny_export.run_dir / "model"],
        corpus / "validation.jsonl",
        corpus / "test.jsonl",
        resamples=50,
    )
    labels = {
        "evidence": ["research", "guidance", "local_data", "single_case", "none_stated"],
        "action_strength": ["weak", "intermediate", "strong"],
    }
    assert [r["task"] for r in result["rows"]] == list(labels)
    for row in result["rows"]:
        assert row["validation_with"] >= row["validation_without"]
        assert row["validation_halves_n"] == 2 * result["cv_repeats"]
        assert 0 <= row["validation_halves_positive"] <= row["validation_halves_n"]
        lo, hi = row["test_gap_interval"]
        assert lo <= hi and list(row["offsets"]) == labels[row["task"]]
        assert 0.0 <= row["test_with"] <= 1.0 and 0.0 <= row["test_without"] <= 1.0
    table = format_offsets_probe(result, "python benchmarks/class_offsets.py run")
    assert table.count("| evidence |") == 1 and "Validation halves" in table
