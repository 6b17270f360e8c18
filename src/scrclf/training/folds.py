"""Out-of-fold predictions by review, for fitting decisions on more items than one split.

Decisions (temperatures, theme thresholds, the wide part's weight) are fitted on held-out
predictions. The validation split gives one model's held-out predictions on its items only;
k-fold cross-validation by review over train + validation gives held-out predictions of
models trained the same way on every one of those items:

1. :func:`assign_folds` puts each review (all its items) in one of k folds, balanced by items;
2. :func:`write_folds` writes, for each fold, the training file (the other folds) and the
   held-out file (this fold);
3. :func:`train_fold` trains one run per fold with the variant's overrides, on the fold's
   files (the held-out file stands in for validation: it picks the best checkpoint, as the
   validation split does for a normal run);
4. the model-selection study (:mod:`scrclf.training.selection`) gathers each fold run's
   logits on its held-out items and fits the decisions of the variant's full run on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.data.records import Record
from scrclf.errors import SettingsError
from scrclf.settings import check_entry

OOF_KEYS = {"variant", "seed", "folds", "split_seed"}
TRAIN_FILE = "train.jsonl"
HELD_OUT_FILE = "held_out.jsonl"


@dataclass
class FoldPlan:
    """Which finished run gets out-of-fold decisions, and how the folds are drawn."""

    variant: str
    seed: int = 42
    folds: int = 5
    split_seed: int = 0

    @classmethod
    def from_config(cls, raw: Any, where: str) -> FoldPlan:
        raw = check_entry(raw, where, OOF_KEYS, "variant", "'out_of_fold'")
        values = {k: raw[k] for k in ("seed", "folds", "split_seed") if k in raw}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(f"{where}: out_of_fold.{key} must be an integer, got {value!r}")
        plan = cls(variant=str(raw["variant"]), **values)
        if plan.folds < 2:
            raise SettingsError(f"{where}: out_of_fold.folds must be at least 2, got {plan.folds}")
        return plan


def assign_folds(items_per_review: Mapping[str, int], k: int, seed: int) -> dict[str, int]:
    """The fold of each review: reviews in a seeded random order, largest first (ties in
    that order), each given to the fold with the fewest items so far."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(items_per_review) < k:
        raise ValueError(f"{len(items_per_review)} reviews cannot fill {k} folds")
    reviews = sorted(items_per_review)
    order = np.random.default_rng(seed).permutation(len(reviews))
    shuffled = [reviews[i] for i in order]
    shuffled.sort(key=lambda r: -items_per_review[r])  # stable: the random order breaks ties
    sizes = [0] * k
    fold_of: dict[str, int] = {}
    for review in shuffled:
        fold = min(range(k), key=lambda f: (sizes[f], f))
        fold_of[review] = fold
        sizes[fold] += items_per_review[review]
    return fold_of


def _group(record: Record, group_column: str) -> str:
    value = record.data.get(group_column)
    # An item without a review id is its own review.
    return str(value) if value not in (None, "") else f"\x00{record.data.get('id', id(record))}"


def item_folds(records: Sequence[Record], group_column: str, k: int, seed: int) -> list[int]:
    """The fold of each record, in order: its review's fold from :func:`assign_folds`."""
    groups = [_group(record, group_column) for record in records]
    counts: dict[str, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    fold_of = assign_folds(counts, k, seed)
    return [fold_of[group] for group in groups]


def write_folds(
    records: Sequence[Record], group_column: str, k: int, seed: int, out: Path
) -> list[tuple[Path, Path]]:
    """Write ``fold<i>/train.jsonl`` and ``fold<i>/held_out.jsonl`` for each fold under
    ``out``; returns the (train, held-out) files. Items keep their order within each file.
    Files already there with the same content are left untouched, so finished fold runs
    stay valid."""
    folds = item_folds(records, group_column, k, seed)
    files = []
    for fold in range(k):
        folder = out / f"fold{fold}"
        held = [r.data for r, f in zip(records, folds, strict=True) if f == fold]
        rest = [r.data for r, f in zip(records, folds, strict=True) if f != fold]
        pair = (folder / TRAIN_FILE, folder / HELD_OUT_FILE)
        for path, rows in zip(pair, (rest, held), strict=True):
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                from scrclf.atomic import write_text

                folder.mkdir(parents=True, exist_ok=True)
                write_text(path, text)
        files.append(pair)
    return files


def fold_overrides(train_file: Path, held_out_file: Path, seed: int, out: Path) -> list[str]:
    """Hydra overrides that train one fold run: the fold's files in place of train and
    validation, evaluated on the held-out file only."""
    from scrclf.training.search import as_override

    return [
        as_override("data.splits.train", str(train_file.resolve())),
        as_override("data.splits.validation", str(held_out_file.resolve())),
        as_override("seed", seed),
        as_override("paths.output_dir", str(out.resolve())),
        "eval_splits=[validation]",
    ]


def train_fold(
    overrides: Sequence[str], train_file: Path, held_out_file: Path, seed: int, out: Path
) -> None:
    """Train one fold run into ``out`` with a variant's ``overrides``."""
    from scrclf.settings import compose
    from scrclf.training.main import train

    train(compose("train", [*overrides, *fold_overrides(train_file, held_out_file, seed, out)]))
