"""Metrics, decision tuning and temperature fitting against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrclf.calibration import fit_temperature, tune_thresholds
from scrclf.evaluation.bootstrap import multi_label_replicates, single_label_replicates
from scrclf.evaluation.metrics import compute_metrics, expected_calibration_error, task_metrics
from scrclf.tasks import TaskSet, TaskSpec

ON, OFF = 4.0, -4.0


def multi_task(n_labels: int = 3) -> TaskSpec:
    return TaskSpec(name="themes", type="multi_label", labels=[f"t{i}" for i in range(n_labels)])


def single_task(n_labels: int = 3) -> TaskSpec:
    return TaskSpec(name="evidence", type="single_label", labels=[f"e{i}" for i in range(n_labels)])


def logits_for(decisions: np.ndarray) -> np.ndarray:
    """Logits whose decisions at T=1 and threshold 0.5 are exactly ``decisions``."""
    return np.where(np.asarray(decisions) == 1, ON, OFF)


# ----------------------------------------------------------------- multi-label by hand

Y_MULTI = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
P_MULTI = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0]])


def test_multi_label_f1_hamming_and_subset_accuracy_by_hand():
    # label 0: tp 2, fp 0, fn 0 -> F1 1
    # label 1: tp 1 (row 3), fp 1 (row 2), fn 1 (row 1) -> F1 2/(2+1+1) = 0.5
    # label 2: tp 1 -> F1 1
    # micro: tp 4, fp 1, fn 1 -> 8/10; weighted by support (2, 2, 1): (2 + 1 + 1)/5
    # exact rows: 0 and 3 -> subset accuracy 0.5; wrong cells: 2 of 12 -> Hamming 1/6
    m = task_metrics(multi_task(), logits_for(P_MULTI), Y_MULTI, detailed=True)
    assert m["micro_f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["weighted_f1"] == pytest.approx(0.8)
    assert m["subset_accuracy"] == pytest.approx(0.5)
    assert m["hamming_loss"] == pytest.approx(2 / 12)
    assert m["per_label"]["t1"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    # confusion of label 1: [[tn, fp], [fn, tp]]
    assert m["confusion"]["t1"] == [[1, 1], [1, 1]]


def test_multi_label_takes_the_top_label_when_nothing_passes_the_threshold():
    logits = np.array([[-1.0, -0.5, -3.0]])  # all below 0.5; label 1 is the highest
    m = task_metrics(multi_task(), logits, np.array([[0, 1, 0]]))
    assert m["subset_accuracy"] == 1.0


def test_stored_thresholds_and_temperature_change_the_decisions():
    task = multi_task()
    logits = np.array([[1.0, 1.0, -2.0]])  # sigmoid(1) = 0.73 for labels 0 and 1
    target = np.array([[1, 0, 0]])
    assert task_metrics(task, logits, target)["subset_accuracy"] == 0.0
    task.thresholds = [0.5, 0.8, 0.5]
    assert task_metrics(task, logits, target)["subset_accuracy"] == 1.0
    task.temperature = 10.0  # sigmoid(0.1) = 0.52 < 0.8 for label 1, >= 0.5 for label 0
    assert task_metrics(task, logits, target)["subset_accuracy"] == 1.0


# ---------------------------------------------------------------- single-label by hand


def test_single_label_f1_and_accuracy_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 2, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 1, fp 1, fn 0 -> 2/3;
    # class 2: tp 2, fp 0, fn 1 -> 0.8
    m = task_metrics(single_task(), np.eye(3)[p] * 5, y, detailed=True)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_a_class_absent_from_data_and_predictions_counts_as_zero_in_macro_f1():
    y = np.array([0, 1])
    m = task_metrics(single_task(3), np.eye(3)[y] * 5, y)
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_compute_metrics_scores_only_the_named_tasks_and_averages_macro_f1():
    from scrclf.evaluation import evaluate as evaluation
    from scrclf.evaluation import metrics

    assert evaluation.HEADLINE == metrics.HEADLINE
    tasks = TaskSet([multi_task(), single_task()])
    y = np.array([0, 0, 1, 2, 2, 2])
    out = compute_metrics(tasks, [np.eye(3)[y] * 5], [y], names=["evidence"])
    assert set(out) == {"evidence", "mean_macro_f1"}
    assert out["mean_macro_f1"] == out["evidence"]["macro_f1"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- calibration


def test_expected_calibration_error_by_hand():
    # 2 bins: [0, 0.5] holds 0.3 and 0.25 (mean 0.275, accuracy 0.5): gap 0.225
    #         (0.5, 1] holds 0.95 and 0.85 (mean 0.9, accuracy 0.5): gap 0.4
    ece, bins = expected_calibration_error(
        np.array([0.95, 0.85, 0.3, 0.25]), np.array([1, 0, 1, 0]), n_bins=2
    )
    assert ece == pytest.approx(0.5 * 0.225 + 0.5 * 0.4)
    assert [b["count"] for b in bins] == [2, 2]
    assert bins[1]["confidence"] == pytest.approx(0.9)


def test_single_label_ece_uses_the_top_probability():
    probs = np.array([[0.85, 0.1, 0.05], [0.55, 0.3, 0.15], [0.2, 0.75, 0.05], [0.05, 0.1, 0.85]])
    y = np.array([0, 1, 1, 2])  # second item wrong
    m = task_metrics(single_task(), np.log(probs), y)
    # 10 bins: 0.55 alone (accuracy 0), 0.75 alone (accuracy 1), 0.85 twice (accuracy 1)
    expected = (0.55 + 0.25 + 2 * 0.15) / 4
    assert m["ece"] == pytest.approx(expected)


def test_tune_thresholds_finds_the_known_best_and_falls_back_for_rare_labels():
    # label 0: positives from 0.62 up, one negative at 0.58: only the grid point 0.6
    # separates them perfectly (0.575 keeps the negative, 0.625 loses the 0.62 positive).
    pos = [0.62, 0.66, 0.7, 0.74, 0.8, 0.9]
    neg = [0.1, 0.2, 0.3, 0.4, 0.58]
    col0 = np.array(pos + neg)
    y0 = np.array([1] * len(pos) + [0] * len(neg))
    # label 1: only two positives, too few to tune
    col1 = np.linspace(0.1, 0.9, len(col0))
    y1 = np.zeros(len(col0), dtype=int)
    y1[[3, 9]] = 1
    thresholds, how = tune_thresholds(
        np.column_stack([col0, col1]), np.column_stack([y0, y1]), min_positives=5
    )
    assert thresholds[0] == pytest.approx(0.6)
    assert how[0] == "tuned"
    assert thresholds[1] == 0.5
    assert how[1] == "default: 2 positives"


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(7)
    true_logits = rng.normal(0, 1.5, size=(6000, 4))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in probs])
    fitted = fit_temperature(single_task(4), true_logits * 2.5, y)  # overconfident by 2.5
    assert fitted == pytest.approx(2.5, rel=0.1)


def test_fit_temperature_recovers_a_known_temperature_for_multi_label():
    rng = np.random.default_rng(11)
    true_logits = rng.normal(0, 2.0, size=(4000, 3))
    y = (rng.random(true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(int)
    fitted = fit_temperature(multi_task(), true_logits * 0.5, y)  # underconfident
    assert fitted == pytest.approx(0.5, rel=0.1)


# --------------------------------------------- vectorised bootstrap metrics = scikit-learn


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=2, max_value=40))
def test_vectorised_multi_label_metrics_match_scikit_learn(seed, n):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < 0.35).astype(int)
    y[np.arange(n), rng.integers(0, 4, n)] = 1  # every item has a label
    p = (rng.random((n, 4)) < 0.35).astype(int)
    p[np.arange(n), rng.integers(0, 4, n)] = 1
    expected = task_metrics(multi_task(4), logits_for(p), y)
    got = multi_label_replicates(np.ones((1, n)), y, p)
    for key in (
        "micro_f1",
        "macro_f1",
        "weighted_f1",
        "samples_f1",
        "subset_accuracy",
        "hamming_loss",
    ):
        assert got[key][0] == pytest.approx(expected[key]), key


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=40))
def test_vectorised_single_label_metrics_match_scikit_learn(seed, n):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 5, n), rng.integers(0, 5, n)
    expected = task_metrics(single_task(5), np.eye(5)[p] * 5, y)
    got = single_label_replicates(np.ones((1, n)), y, p, 5)
    for key in ("accuracy", "micro_f1", "macro_f1", "weighted_f1"):
        assert got[key][0] == pytest.approx(expected[key]), key


def test_integer_weights_equal_repeating_items():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 2, 2, 1, 1])
    w = np.array([[2, 0, 1, 3, 1]])
    repeated = np.repeat(np.arange(5), w[0])
    expected = task_metrics(single_task(), np.eye(3)[p[repeated]] * 5, y[repeated])
    got = single_label_replicates(w, y, p, 3)
    assert got["macro_f1"][0] == pytest.approx(expected["macro_f1"])
    assert got["accuracy"][0] == pytest.approx(expected["accuracy"])
