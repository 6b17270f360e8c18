"""Per-class offsets of single-label decisions, probed on finished runs without training.

For each saved model and each single-label task: the temperature fitted on validation (as
training fits it), then the test macro-F1 of the top class and of the top class after
offsets tuned on validation (:func:`scrclf.calibration.tune_offsets`), with a paired
interval over resampled reviews. Whether to use offsets is decided on validation alone: the
validation reviews are split in two halves, temperature and offsets fitted on one half and
scored on the other, both ways, over several random splits (``cv_repeats``). The logits are
the saved model's own, wide part included at its stored weight, so the probe isolates the
decision rule. ``benchmarks/class_offsets.py`` is its command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scrclf.atomic import shown_path
from scrclf.calibration import (
    decide_single_label,
    fit_temperature,
    probabilities,
    single_label_macro_f1,
    tune_offsets,
)
from scrclf.evaluation.bootstrap import ClusterBootstrap, interval, replicates, review_halves
from scrclf.tasks import TaskSpec


def probe_offsets(
    model_dirs: Sequence[str | Path],
    validation: str | Path,
    test: str | Path,
    resamples: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    cv_repeats: int = 5,
) -> dict[str, Any]:
    """Test macro-F1 of every single-label task without and with fitted offsets, per model."""
    from scrclf.evaluation.evaluate import labelled_logits
    from scrclf.inference.classifier import load

    rows: list[dict[str, Any]] = []
    boot: ClusterBootstrap | None = None
    for model_dir in model_dirs:
        clf = load(model_dir, backend="torch")
        scored = labelled_logits(clf, {"validation": validation, "test": test}, batch_size)
        (val, logits_val), (tst, logits_test) = scored["validation"], scored["test"]
        if boot is None:
            boot = ClusterBootstrap.from_groups(tst.groups, resamples=resamples, seed=seed)
        y_val, y_test = val.targets(clf.tasks), tst.targets(clf.tasks)
        for task in clf.tasks:
            if task.is_multi_label:
                continue
            validation_pair = (logits_val[task.name], y_val[task.name])
            row = _probe_task(
                task, validation_pair, (logits_test[task.name], y_test[task.name]), boot
            )
            row.update(_halves(task, validation_pair, val.groups, cv_repeats, seed))
            rows.append({"model": shown_path(model_dir), **row})
    return {
        "validation": shown_path(validation),
        "test": shown_path(test),
        "resamples": resamples,
        "seed": seed,
        "cv_repeats": cv_repeats,
        "rows": rows,
    }


Pair = tuple[np.ndarray, np.ndarray]  # logits and targets


class Fitted(NamedTuple):
    """Temperature and offsets fitted on one set of items, and the decisions on another."""

    temperature: float
    offsets: list[float]
    fit_without: float  # macro-F1 on the fitted items, top class
    fit_with: float  # and after offsets
    plain: np.ndarray  # top class of the scored items
    moved: np.ndarray  # top class after offsets


def _fit_and_decide(task: TaskSpec, fit: Pair, scored: np.ndarray) -> Fitted:
    """Fit the temperature and the offsets on ``fit`` (as training does) and decide the
    ``scored`` logits with and without the offsets."""
    temperature = fit_temperature(task, *fit)
    offsets, before, after = tune_offsets(probabilities(task, fit[0], temperature), fit[1])
    probs = probabilities(task, scored, temperature)
    plain, moved = decide_single_label(probs), decide_single_label(probs, offsets)
    return Fitted(temperature, offsets, before, after, plain, moved)


def _gain(task: TaskSpec, fit: Pair, score: Pair) -> float:
    """Macro-F1 on ``score`` with offsets fitted on ``fit``, minus that of the top class."""
    logits, y = score
    fitted = _fit_and_decide(task, fit, logits)
    n = task.num_labels
    return single_label_macro_f1(y, fitted.moved, n) - single_label_macro_f1(y, fitted.plain, n)


def _halves(
    task: TaskSpec,
    validation: Pair,
    groups: Sequence[Any],
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    """The gain of offsets fitted on half of the validation reviews, on the other half."""
    logits, y = validation
    gains = [
        _gain(task, (logits[fit], y[fit]), (logits[held], y[held]))
        for fit, held in review_halves(groups, repeats, seed)
    ]
    return {
        "validation_halves_gain": float(np.mean(gains)),
        "validation_halves_positive": int(sum(g > 0 for g in gains)),
        "validation_halves_n": len(gains),
    }


def _probe_task(
    task: TaskSpec,
    validation: Pair,
    test: Pair,
    boot: ClusterBootstrap,
) -> dict[str, Any]:
    (logits_test, y_test), n = test, task.num_labels
    fitted = _fit_and_decide(task, validation, logits_test)
    # The paired gap over the same resampled reviews, as the benchmark computes its gaps.
    gaps = (
        replicates(boot, False, y_test, fitted.moved, n)["macro_f1"]
        - replicates(boot, False, y_test, fitted.plain, n)["macro_f1"]
    )
    return {
        "task": task.name,
        "temperature": fitted.temperature,
        "offsets": dict(zip(task.labels, fitted.offsets, strict=True)),
        "validation_without": fitted.fit_without,
        "validation_with": fitted.fit_with,
        "test_without": single_label_macro_f1(y_test, fitted.plain, n),
        "test_with": single_label_macro_f1(y_test, fitted.moved, n),
        "test_gap_interval": interval(gaps),
    }


def format_offsets_probe(result: Mapping[str, Any], command: str) -> str:
    """The probe as Markdown."""
    lines = [
        "# Class offsets of single-label decisions",
        "",
        f"Measured with `{command}`: temperature and offsets fitted on "
        f"`{result['validation']}`, macro-F1 on `{result['test']}`; the gap's 95% interval "
        f"from {result['resamples']} resamples of whole reviews (seed {result['seed']}). "
        f"Validation halves: the validation reviews split in two at random, temperature and "
        f"offsets fitted on one half and scored on the other, both ways, "
        f"{result['cv_repeats']} splits; the mean gain in macro-F1 over the top class and how "
        f"many of the scored halves gained. That column, not test, says whether offsets help.",
        "",
        "| model | task | validation halves: gain (positive) | validation: top class → with "
        "offsets | test: top class | test: with offsets | gap [95% CI] | offsets |",
        "|---|---|---|---|---:|---:|---|---|",
    ]
    for r in result["rows"]:
        lo, hi = r["test_gap_interval"]
        offsets = ", ".join(f"{k} {v:+.1f}" for k, v in r["offsets"].items())
        lines.append(
            f"| {Path(r['model']).parent.name or r['model']} | {r['task']} | "
            f"{r['validation_halves_gain']:+.4f} ({r['validation_halves_positive']} of "
            f"{r['validation_halves_n']}) | "
            f"{r['validation_without']:.4f} → {r['validation_with']:.4f} | "
            f"{r['test_without']:.4f} | {r['test_with']:.4f} | "
            f"{r['test_with'] - r['test_without']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {offsets} |"
        )
    return "\n".join(lines) + "\n"
