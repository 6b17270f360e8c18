"""Per-item predictions of an evaluated file, and the worst errors per task.

For every evaluated item: its id, review, text, and per task the gold label(s), the
predicted label(s) at the model's stored decisions, the score of every label and whether
the prediction is right. Written as ``predictions.jsonl`` (one object per item, nested per
task), ``predictions.csv`` (one flat row per item, for spreadsheets) and ``errors.md``
(per task, the wrong items the model was most sure of).

How sure a wrong prediction was: single-label, the probability of the predicted label;
multi-label, the largest probability put on the wrong side of a wrong label (``p`` for a
label predicted but not annotated, ``1 - p`` for one annotated but missed).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scrclf.calibration import decide, probabilities
from scrclf.tasks import TaskSet

ITEMS_JSONL = "predictions.jsonl"
ITEMS_CSV = "predictions.csv"
ERRORS_MD = "errors.md"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def item_predictions(
    rows: Sequence[Mapping[str, Any]],
    tasks: TaskSet,
    logits: Mapping[str, np.ndarray],
    present: Sequence[str],
    settings: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One dict per item: ``id``, ``review``, ``text``, ``finding`` and per scored task
    ``gold``, ``predicted``, ``scores``, ``correct`` and ``error_confidence`` (how sure a
    wrong prediction was; None when right)."""
    names = [n for n in tasks.names if n in present and n in logits]
    decided = {}
    for name in names:
        task = tasks[name]
        probs = probabilities(task, np.asarray(logits[name]))
        decided[name] = (probs, decide(task, probs))
    pair, group = settings.get("pair_column"), settings.get("group_column")
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        item: dict[str, Any] = {
            "id": row.get(settings["id_column"]),
            "review": row.get(group) if group else None,
            "text": row.get(settings["text_column"]),
            "finding": row.get(pair) if pair else None,
        }
        for name in names:
            task = tasks[name]
            probs, pred = decided[name]
            scores = {label: float(p) for label, p in zip(task.labels, probs[i], strict=True)}
            gold = row[str(task.column)]
            if task.is_multi_label:
                on = [j for j in np.argsort(-probs[i], kind="stable") if pred[i, j]]
                predicted: Any = [task.labels[j] for j in on]
                gold_set, pred_set = set(gold), set(predicted)
                correct = gold_set == pred_set
                wrong = [
                    scores[lab] if lab in pred_set else 1.0 - scores[lab]
                    for lab in gold_set ^ pred_set
                ]
                error = max(wrong) if wrong else None
            else:
                predicted = task.labels[int(pred[i])]
                correct = predicted == gold
                error = None if correct else scores[predicted]
            item[name] = {
                "gold": list(gold) if task.is_multi_label else gold,
                "predicted": predicted,
                "correct": bool(correct),
                "error_confidence": error,
                "scores": scores,
            }
        out.append(item)
    return out


def _cell(value: Any) -> Any:
    """A spreadsheet-safe cell: a text a spreadsheet would run as a formula gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value


def items_csv(items: Sequence[Mapping[str, Any]], tasks: TaskSet, present: Sequence[str]) -> str:
    """The items as CSV: id, review, text, finding, then per task gold, predicted, correct
    and one score column per label (multi-label lists joined with ``;``)."""
    names = [n for n in tasks.names if n in present]
    header = ["id", "review", "text", "finding"]
    for name in names:
        header += [f"{name}_gold", f"{name}_predicted", f"{name}_correct"]
        header += [f"{name}_score_{label}" for label in tasks[name].labels]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for item in items:
        row = [_cell(item[k]) for k in ("id", "review", "text", "finding")]
        for name in names:
            entry = item.get(name)
            if entry is None:
                row += [""] * (3 + tasks[name].num_labels)
                continue
            join = ";".join if tasks[name].is_multi_label else str
            row += [join(entry["gold"]), join(entry["predicted"]), entry["correct"]]
            row += [f"{entry['scores'][label]:.6f}" for label in tasks[name].labels]
        writer.writerow(row)
    return buffer.getvalue()


def items_jsonl(items: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def worst_errors(
    items: Sequence[Mapping[str, Any]], task: str, n: int = 10
) -> list[Mapping[str, Any]]:
    """The ``n`` wrong items of ``task`` the model was most sure of, surest first."""
    wrong = [it for it in items if task in it and not it[task]["correct"]]
    return sorted(wrong, key=lambda it: -(it[task]["error_confidence"] or 0.0))[:n]


def _shown(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_errors(
    items: Sequence[Mapping[str, Any]],
    tasks: TaskSet,
    present: Sequence[str],
    title: str,
    n: int = 10,
    max_chars: int = 300,
) -> str:
    """``errors.md``: per task, how many items are wrong and the ``n`` surest errors."""
    out = [f"# Worst errors: {title}", ""]
    out += [
        "Per task, the wrong predictions the model was most sure of (at its stored "
        "decisions). *Sure* is the probability of the wrong label (single-label), or the "
        "largest probability on the wrong side of a label (multi-label). All items are in "
        f"`{ITEMS_CSV}` and `{ITEMS_JSONL}`.",
        "",
    ]
    for name in [n_ for n_ in tasks.names if n_ in present]:
        scored = [it for it in items if name in it]
        wrong = worst_errors(items, name, n)
        n_wrong = sum(1 for it in scored if not it[name]["correct"])
        out += [f"## {name}: {n_wrong} of {len(scored)} items wrong", ""]
        if not wrong:
            out += ["No errors.", ""]
            continue
        out += ["| sure | id | review | gold | predicted | text |", "|---:|---|---|---|---|---|"]
        for it in wrong:
            text = str(it["text"])
            if len(text) > max_chars:
                text = text[: max_chars - 1] + "…"
            out.append(
                f"| {it[name]['error_confidence']:.3f} | {_shown(it['id'])} | "
                f"{_shown(it['review'] if it['review'] is not None else '')} | "
                f"{_shown(it[name]['gold'])} | {_shown(it[name]['predicted'])} | "
                f"{_shown(text)} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_items(
    folder,
    items: Sequence[Mapping[str, Any]],
    tasks: TaskSet,
    present: Sequence[str],
    title: str,
) -> list[str]:
    """Write predictions.jsonl, predictions.csv and errors.md into ``folder`` (inside an
    atomic directory); returns the file names."""
    from pathlib import Path

    from scrclf import atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / ITEMS_JSONL, items_jsonl(items))
    atomic.write_text(folder / ITEMS_CSV, items_csv(items, tasks, present))
    atomic.write_text(folder / ERRORS_MD, render_errors(items, tasks, present, title))
    return [ITEMS_JSONL, ITEMS_CSV, ERRORS_MD]
