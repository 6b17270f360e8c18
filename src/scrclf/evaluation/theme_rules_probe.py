"""How many themes per item: decision rules for a multi-label task, probed on finished runs.

Given each item's annotated number of themes, a model's best-scoring themes reach a higher
micro-F1 than the codebook's decision rule gives (the study's "annotated count" rows). This
probe asks whether a rule can recover that gain from what is known at prediction time. For
each saved model, on its own logits (wide part included at its stored weight):

- ``codebook``: the task's configured rule (per-label thresholds within the share tolerance,
  the label count calibrated, the top label always on, at most ``max_labels``), refitted;
- ``global``: one threshold on the calibrated probabilities for every label, the one with
  the best micro-F1 (under calibrated probabilities micro-F1 wants one cut, not one per
  label);
- ``count_scores``: the number of labels predicted from the shape of the item's scores (its
  highest scaled logits and their margins over the codebook thresholds) by a multinomial
  logistic regression, then that many labels taken by margin;
- ``count_length``: the same with the text's length and punctuation beside the scores (long
  bundled recommendations carry more themes);
- ``count_words``: the same with the label count predicted from the text's words as well,
  by a TF-IDF logistic regression fitted on the training split;
- ``annotated_count``: each item's annotated count, taken by margin: a ceiling, not a rule.

Every rule is fitted on validation (temperature and thresholds as training fits them) and
scored on test, with a paired interval over resampled reviews against ``codebook``. Whether
a rule helps is decided on validation alone: the validation reviews split in two halves,
the rule fitted on one and scored on the other, both ways, over ``cv_repeats`` splits.
``benchmarks/theme_rules.py`` is its command line.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.atomic import shown_path
from scrclf.calibration import THRESHOLD_GRID, calibrate, decide_multi_label, probabilities
from scrclf.errors import SettingsError
from scrclf.evaluation.bootstrap import (
    ClusterBootstrap,
    interval,
    multi_label_replicates,
    replicates,
    review_halves,
)
from scrclf.tasks import TaskSet, TaskSpec

RULES = ("codebook", "global", "count_scores", "count_length", "count_words")
CEILING = "annotated_count"
# How many of an item's highest scores (and margins) describe its shape.
SHAPE_WIDTH = 4


def micro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Micro-F1 of a 0/1 label matrix, as the evaluation computes it."""
    return float(multi_label_replicates(np.ones((1, len(y))), y, pred)["micro_f1"][0])


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 of a 0/1 label matrix, as the evaluation computes it."""
    return float(multi_label_replicates(np.ones((1, len(y))), y, pred)["macro_f1"][0])


def top_k(scores: np.ndarray, counts: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """A 0/1 matrix with each row's ``counts[i]`` highest ``scores`` on; with ``first``, the
    label ``first[i]`` comes before every other (the primary)."""
    scores = np.array(scores, dtype=np.float64)
    if first is not None and len(scores):
        scores[np.arange(len(scores)), np.asarray(first)] = np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.zeros(np.shape(scores), dtype=np.int64)
    for i, k in enumerate(np.asarray(counts, dtype=np.int64)):
        out[i, order[i, :k]] = 1
    return out


def text_features(texts: Sequence[str]) -> np.ndarray:
    """Length and punctuation of each text: log word count, commas, semicolons and "and"s."""
    return np.asarray(
        [
            [np.log1p(len(t.split())), t.count(","), t.count(";") + t.lower().count(" and ")]
            for t in texts
        ],
        dtype=np.float64,
    )


class Items:
    """One set of items for a rule: the task's logits, targets and texts' count features."""

    def __init__(self, logits: np.ndarray, targets: np.ndarray, extra: Mapping[str, np.ndarray]):
        self.logits = np.asarray(logits, dtype=np.float64)
        self.targets = np.asarray(targets).astype(np.int64)
        self.extra = {k: np.asarray(v, dtype=np.float64) for k, v in extra.items()}

    def subset(self, index: np.ndarray) -> Items:
        return Items(
            self.logits[index], self.targets[index], {k: v[index] for k, v in self.extra.items()}
        )


Decider = Callable[[Items], np.ndarray]


def _fitted_codebook(task: TaskSpec, items: Items) -> TaskSpec:
    fitted = copy.deepcopy(task)
    calibrate(TaskSet([fitted]), [items.logits], [items.targets])
    return fitted


def _margins(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Scaled logits over each label's threshold, in logit units."""
    thresholds = np.clip(np.asarray(task.decision_thresholds(), dtype=np.float64), 1e-6, 1 - 1e-6)
    return logits / task.temperature - np.log(thresholds / (1 - thresholds))[None, :]


def _by_margin(task: TaskSpec, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts[i]`` labels per item: the top score (the primary, as the codebook's rule has
    it), then the highest margins over the thresholds."""
    return top_k(_margins(task, logits), counts, first=logits.argmax(axis=1))


def _shape(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    width = min(SHAPE_WIDTH, logits.shape[1])
    scaled = -np.sort(-logits / task.temperature, axis=1)[:, :width]
    margins = _margins(task, logits)
    ordered = -np.sort(-margins, axis=1)[:, :width]
    return np.column_stack([scaled, ordered, (margins >= 0).sum(axis=1)])


def fit_rules(task: TaskSpec, rules: Sequence[str], fit: Items) -> dict[str, Decider]:
    """Fit each of ``rules`` on ``fit``; the codebook's decisions, which every rule starts
    from, are fitted once."""
    fitted = _fitted_codebook(task, fit)
    return {rule: _fit_rule(task, fitted, rule, fit) for rule in rules}


def fit_rule(task: TaskSpec, rule: str, fit: Items) -> Decider:
    """Fit ``rule`` on ``fit`` and return what decides other items with it."""
    return fit_rules(task, [rule], fit)[rule]


def _fit_rule(task: TaskSpec, fitted: TaskSpec, rule: str, fit: Items) -> Decider:
    """``rule`` fitted on ``fit``, given the codebook's decisions ``fitted`` on it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if rule == "codebook":
        return lambda items: decide_multi_label(
            probabilities(fitted, items.logits),
            fitted.decision_thresholds(),
            max_labels=fitted.max_labels,
        )
    if rule == "global":
        probs = probabilities(fitted, fit.logits)
        n = probs.shape[1]

        def score(t: float) -> float:
            return micro_f1(
                fit.targets, decide_multi_label(probs, [t] * n, max_labels=task.max_labels)
            )

        # Ties go to the cut closest to 0.5.
        cut = float(max(sorted(THRESHOLD_GRID, key=lambda g: (abs(g - 0.5), g)), key=score))
        return lambda items: decide_multi_label(
            probabilities(fitted, items.logits), [cut] * n, max_labels=task.max_labels
        )
    if rule == CEILING:
        return lambda items: _by_margin(
            fitted, items.logits, np.maximum(items.targets.sum(axis=1), 1)
        )
    extras = {"count_scores": [], "count_length": ["length"], "count_words": ["length", "words"]}
    if rule not in extras:
        raise SettingsError(f"unknown theme rule {rule!r}; known: {', '.join(RULES)}")
    cap = task.max_labels or task.num_labels

    def features(items: Items) -> np.ndarray:
        return np.column_stack(
            [_shape(fitted, items.logits), *(items.extra[k] for k in extras[rule])]
        )

    counts = np.clip(fit.targets.sum(axis=1), 1, cap)
    if len(np.unique(counts)) < 2:
        return lambda items: _by_margin(fitted, items.logits, np.full(len(items.logits), counts[0]))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    model.fit(features(fit), counts)
    return lambda items: _by_margin(fitted, items.logits, model.predict(features(items)))


def word_count_model(texts: Sequence[str], targets: np.ndarray, cap: int):
    """A TF-IDF (word 1-2 grams) logistic regression predicting the label count (1 to
    ``cap``) from the text, fitted on the training split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    counts = np.clip(np.asarray(targets).sum(axis=1), 1, cap)
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, strip_accents="unicode"),
        LogisticRegression(C=1.0, max_iter=3000),
    )
    return model.fit(list(texts), counts)


def _words_by_count(texts: Sequence[str], targets: np.ndarray) -> dict[str, Any]:
    """The median number of words of the items with each annotated number of labels."""
    words = np.asarray([len(t.split()) for t in texts])
    counts = np.asarray(targets).sum(axis=1)
    return {
        str(int(k)): {
            "items": int((counts == k).sum()),
            "median_words": float(np.median(words[counts == k])),
        }
        for k in np.unique(counts)
    }


def _outcome(items: Items, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    y = items.targets
    gap = np.abs(pred.mean(axis=0) - y.mean(axis=0))
    return {
        "micro_f1": micro_f1(y, pred),
        "macro_f1": macro_f1(y, pred),
        "per_item": float(pred.sum(axis=1).mean()),
        "count_accuracy": float(np.mean(pred.sum(axis=1) == y.sum(axis=1))),
        "share_gap_max": float(gap.max()),
        "share_gap_label": labels[int(gap.argmax())],
    }


def _halves(
    task: TaskSpec, validation: Items, groups: Sequence[Any], repeats: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Each rule's micro-F1 on half of the validation reviews when fitted on the other half,
    and its gain over the codebook rule fitted on the same half."""
    scores: dict[str, list[float]] = {r: [] for r in RULES}
    for fit, held in review_halves(groups, repeats, seed):
        scored = validation.subset(held)
        for rule, decide in fit_rules(task, RULES, validation.subset(fit)).items():
            scores[rule].append(micro_f1(scored.targets, decide(scored)))
    base = np.asarray(scores["codebook"])
    return {
        rule: {
            "micro_f1": float(np.mean(values)),
            "gain": float(np.mean(np.asarray(values) - base)),
            "positive": int(np.sum(np.asarray(values) > base + 1e-12)),
            "n": len(values),
        }
        for rule, values in scores.items()
    }


def probe_theme_rules(
    model_dirs: Sequence[str | Path],
    train: str | Path,
    validation: str | Path,
    test: str | Path,
    resamples: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    cv_repeats: int = 5,
) -> dict[str, Any]:
    """Every rule's test scores and validation halves, per model (its first multi-label task)."""
    from scrclf.evaluation.evaluate import labelled_logits, load_eval_data
    from scrclf.inference.classifier import load

    rows: list[dict[str, Any]] = []
    boot: ClusterBootstrap | None = None
    counter = None
    words_by_count: dict[str, Any] = {}
    for model_dir in model_dirs:
        clf = load(model_dir, backend="torch")
        task = next((t for t in clf.tasks if t.is_multi_label), None)
        if task is None:
            raise SettingsError(f"{shown_path(model_dir)}: the model has no multi-label task")
        scored = labelled_logits(clf, {"validation": validation, "test": test}, batch_size)
        splits = {name: data for name, (data, _) in scored.items()}
        if boot is None:
            boot = ClusterBootstrap.from_groups(splits["test"].groups, resamples, seed)
        if counter is None:  # the training split serves only the first model's fits
            training = load_eval_data(train, clf.tasks, require_labels=True)
            cap = task.max_labels or task.num_labels
            counter = word_count_model(training.texts, training.targets(clf.tasks)[task.name], cap)
            words_by_count = {
                name: _words_by_count(data.texts, data.targets(clf.tasks)[task.name])
                for name, data in (("train", training), *splits.items())
            }
        items = {}
        for name, (data, logits) in scored.items():
            extra = {
                "length": text_features(data.texts),
                "words": np.log(np.clip(counter.predict_proba(list(data.texts)), 1e-9, None)),
            }
            items[name] = Items(logits[task.name], data.targets(clf.tasks)[task.name], extra)
        halves = _halves(task, items["validation"], splits["validation"].groups, cv_repeats, seed)
        test_items = items["test"]
        deciders = fit_rules(task, (*RULES, CEILING), items["validation"])
        decisions = {rule: decide(test_items) for rule, decide in deciders.items()}
        base_reps = replicates(
            boot, True, test_items.targets, decisions["codebook"], task.num_labels
        )
        for rule, pred in decisions.items():
            reps = replicates(boot, True, test_items.targets, pred, task.num_labels)
            rows.append(
                {
                    "model": shown_path(model_dir),
                    "task": task.name,
                    "rule": rule,
                    "validation_halves": halves.get(rule),
                    "test": _outcome(test_items, pred, task.labels),
                    "test_gap_interval": interval(reps["micro_f1"] - base_reps["micro_f1"]),
                    "annotated_per_item": float(test_items.targets.sum(axis=1).mean()),
                }
            )
    return {
        "train": shown_path(train),
        "validation": shown_path(validation),
        "test": shown_path(test),
        "resamples": resamples,
        "seed": seed,
        "cv_repeats": cv_repeats,
        "words_by_count": words_by_count,
        "rows": rows,
    }


def format_theme_rules(result: Mapping[str, Any], command: str) -> str:
    """The probe as Markdown."""
    lines = [
        "# How many themes per item: decision rules",
        "",
        f"Measured with `{command}`. Each rule fitted on `{result['validation']}` (the "
        f"word-count model on `{result['train']}`), scored on `{result['test']}`; the gap to "
        f"the codebook rule's test micro-F1 with its 95% interval from {result['resamples']} "
        f"resamples of whole reviews (seed {result['seed']}). Validation halves: the "
        f"validation reviews split in two at random, each rule fitted on one half and scored "
        f"on the other, both ways, {result['cv_repeats']} splits; the mean micro-F1, the mean "
        f"gain over the codebook rule fitted on the same half, and how many scored halves "
        f"gained. That column, not test, says whether a rule helps. `annotated_count` is a "
        f"ceiling: each item's annotated number of themes, the best-scoring ones.",
        "",
        "| model | rule | validation halves: micro-F1 (gain, positive) | test micro-F1 | gap "
        "[95% CI] | test macro-F1 | themes/item (annotated) | count right | largest share gap |",
        "|---|---|---|---:|---|---:|---|---:|---|",
    ]
    for r in result["rows"]:
        t, lo_hi = r["test"], r["test_gap_interval"]
        h = r["validation_halves"]
        halves = (
            f"{h['micro_f1']:.4f} ({h['gain']:+.4f}, {h['positive']} of {h['n']})" if h else "-"
        )
        gap = t["micro_f1"] - next(
            x["test"]["micro_f1"]
            for x in result["rows"]
            if x["model"] == r["model"] and x["rule"] == "codebook"
        )
        lines.append(
            f"| {Path(r['model']).parent.name or r['model']} | {r['rule']} | {halves} | "
            f"{t['micro_f1']:.4f} | {gap:+.4f} [{lo_hi[0]:+.4f}, {lo_hi[1]:+.4f}] | "
            f"{t['macro_f1']:.4f} | {t['per_item']:.2f} ({r['annotated_per_item']:.2f}) | "
            f"{t['count_accuracy']:.1%} | {100 * t['share_gap_max']:.1f} points "
            f"({t['share_gap_label']}) |"
        )
    by_count = result.get("words_by_count") or {}
    if by_count:
        lines += ["", "Median words per item by its annotated number of themes (items):", ""]
        for split, counts in by_count.items():
            parts = [
                f"{k}: {v['median_words']:g} ({v['items']:,})" for k, v in sorted(counts.items())
            ]
            lines.append(f"- {split}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"
