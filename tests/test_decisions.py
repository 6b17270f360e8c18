"""The codebook's decision rule: a primary theme always, at most max_labels, and thresholds
shifted together so the mean label count matches the annotations."""

import numpy as np
import pytest

from scrclf.calibration import (
    calibrate,
    calibrate_label_count,
    decide_multi_label,
    shift_thresholds,
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
