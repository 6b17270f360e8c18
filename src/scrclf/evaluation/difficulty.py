"""Corpus difficulty check: how far bag-of-words baselines get on a split.

A near-perfect TF-IDF score on test means the items are templated, and a model's score on
them says little about real reviews.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrclf.data.records import encode_targets, read_records
from scrclf.evaluation.baselines import build_baseline
from scrclf.evaluation.metrics import compute_metrics
from scrclf.tasks import TaskSet


def difficulty(corpus_dir: str | Path, tasks: TaskSet, split: str = "test") -> dict[str, Any]:
    """Bag-of-words difficulty check: TF-IDF + logistic regression and the label prior.

    Trained on the train split, scored on ``split`` at plain decisions (threshold 0.5). A
    near-perfect bag-of-words score means the items are templated.
    """
    corpus_dir = Path(corpus_dir)
    train_rows = [r.data for r in read_records(corpus_dir / "train.jsonl")]
    eval_rows = [r.data for r in read_records(corpus_dir / f"{split}.jsonl")]
    targets = encode_targets(eval_rows, tasks)
    out: dict[str, Any] = {"split": split, "n_train": len(train_rows), "n_eval": len(eval_rows)}
    for name in ("prior", "keywords", "tfidf_logreg"):
        baseline = build_baseline(name, tasks).fit(train_rows)
        logits = baseline.logits(eval_rows)
        metrics = compute_metrics(
            baseline.tasks, [logits[t] for t in tasks.names], [targets[t] for t in tasks.names]
        )
        out[name] = {
            t: {"macro_f1": metrics[t]["macro_f1"], "micro_f1": metrics[t]["micro_f1"]}
            for t in tasks.names
        }
        out[name]["mean_macro_f1"] = metrics["mean_macro_f1"]
    return out
