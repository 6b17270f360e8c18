"""Benchmark suites: datasets x systems x metrics, one leaderboard with provenance.

A suite (``configs/benchmark/<suite>.yaml``) names

* **systems**: trained models (run directories or export folders, ``systems.models``) and
  baselines (:mod:`scrclf.evaluation.baselines`: ``prior``, ``keywords``, ``tfidf_logreg``), the
  baselines fitted on the train split of ``data``;
* **datasets**: the evaluation split; an external annotated file (``data.external``);
  robustness variants of the evaluation split (finding removed, lower-cased, seeded typos,
  truncated to the first N words); slices of it by addressee and by review era;
* **metrics**: which scores go into the leaderboard beside the headline macro-F1.

Every system is scored on every dataset by :func:`scrclf.evaluation.evaluate.score` (the one
decision rule, the one set of metrics) with cluster-bootstrap intervals over reviews. All
systems on one dataset share the same resamples, so the gap of a system to the best
baseline gets a paired interval; robustness variants share the resamples of the clean
data, so the change a variant causes gets one too.

``run_benchmark(cfg)`` writes ``<report_root>/<suite>-<timestamp>/`` atomically:
``leaderboard.md``, ``leaderboard.json``, ``results.json`` (all metrics),
``provenance.json`` (command line, package versions, sha256 of every data and model file),
``suite.yaml`` (the resolved suite), ``headline.png`` and ``profile/`` (the domain profile
of the evaluation split with the best model's predictions).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from scrclf import atomic
from scrclf.atomic import shown_path, shown_paths
from scrclf.data.columns import ColumnMap
from scrclf.data.records import DataError, Record
from scrclf.errors import SettingsError
from scrclf.evaluation.baselines import BASELINES, build_baseline
from scrclf.evaluation.bootstrap import ClusterBootstrap, few_reviews_warning, interval
from scrclf.evaluation.evaluate import (
    EvalData,
    data_settings,
    file_sha256,
    finite,
    load_classifier,
    load_eval_data,
    model_logits,
    resolve_dir,
    resolve_model,
    score,
)
from scrclf.evaluation.metrics import HEADLINE
from scrclf.settings import (
    BenchmarkSettings,
    BootstrapSettings,
    SlicesSettings,
    VariantSettings,
    era_bins,
)
from scrclf.tasks import TaskSet
from scrclf.version import __version__

MEAN = "mean"
VERSION_PACKAGES = (
    "scrclf",
    "torch",
    "transformers",
    "tokenizers",
    "scikit-learn",
    "numpy",
    "scipy",
    "onnxruntime",
    "hydra-core",
    "omegaconf",
    "matplotlib",
)
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "onnx/model.onnx")


# --------------------------------------------------------------------- robustness variants


def _copy(record: Record, **changes: Any) -> Record:
    data = dict(record.data)
    data.update(changes)
    return Record(data, record.file, record.line)


def without_finding(records: Sequence[Record], pair_column: str = "finding") -> list[Record]:
    """Every item with its finding paragraph removed (the recommendation text alone)."""
    return [_copy(r, **{pair_column: None}) for r in records]


def lowercased(
    records: Sequence[Record], text_column: str = "text", pair_column: str | None = "finding"
) -> list[Record]:
    """Text and finding in lower case."""
    out = []
    for r in records:
        changes = {text_column: r.data[text_column].lower()}
        if pair_column and r.data.get(pair_column):
            changes[pair_column] = r.data[pair_column].lower()
        out.append(_copy(r, **changes))
    return out


_WORD = re.compile(r"[A-Za-z]{4,}")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def typo_text(text: str, rate: float, rng: random.Random) -> str:
    """Put one typo into each word of four or more letters with probability ``rate``.

    A typo swaps two neighbouring letters, drops a letter, doubles one, or replaces one;
    first and last letters are kept (the word stays recognisable to a reader).
    """

    def damage(match: re.Match[str]) -> str:
        word = match.group(0)
        if rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 2)
        kind = rng.randrange(4)
        if kind == 0:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == 1:
            return word[:i] + word[i + 1 :]
        if kind == 2:
            return word[:i] + word[i] + word[i:]
        letter = rng.choice([c for c in _LETTERS if c != word[i].lower()])
        return word[:i] + letter + word[i + 1 :]

    return _WORD.sub(damage, text)


def with_typos(
    records: Sequence[Record],
    rate: float = 0.05,
    seed: int = 0,
    text_column: str = "text",
    pair_column: str | None = "finding",
    id_column: str = "id",
) -> list[Record]:
    """Seeded typos in text and finding; each item's typos depend only on seed and id."""
    if not 0 <= rate <= 1:
        raise SettingsError(f"typo rate must be between 0 and 1, got {rate}")
    out = []
    for r in records:
        rng = random.Random(f"{seed}:{r.data[id_column]}")
        changes = {text_column: typo_text(r.data[text_column], rate, rng)}
        if pair_column and r.data.get(pair_column):
            changes[pair_column] = typo_text(r.data[pair_column], rate, rng)
        out.append(_copy(r, **changes))
    return out


def truncated(records: Sequence[Record], words: int, text_column: str = "text") -> list[Record]:
    """The recommendation text cut to its first ``words`` words (the finding is kept)."""
    if words < 1:
        raise SettingsError(f"truncate words must be >= 1, got {words}")
    return [
        _copy(r, **{text_column: " ".join(r.data[text_column].split()[:words])}) for r in records
    ]


# ----------------------------------------------------------------------------- slices


def slices_by_value(
    rows: Sequence[Mapping[str, Any]], column: str, min_items: int = 1
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """One slice per distinct value of ``column`` (most frequent first), and notes.

    Values with fewer than ``min_items`` items and items without a value are left out,
    with a note.
    """
    groups: dict[str, list[int]] = {}
    missing = 0
    for i, row in enumerate(rows):
        value = row.get(column)
        if value in (None, ""):
            missing += 1
            continue
        groups.setdefault(str(value), []).append(i)
    notes = []
    if missing:
        notes.append(f"{missing} items without '{column}' are in no {column} slice")
    small = sorted(v for v, idx in groups.items() if len(idx) < min_items)
    if small:
        notes.append(
            f"{column} slices with fewer than {min_items} items skipped: {', '.join(small)}"
        )
    kept = sorted(
        ((v, idx) for v, idx in groups.items() if len(idx) >= min_items),
        key=lambda kv: (-len(kv[1]), kv[0]),
    )
    return [(v, np.asarray(idx, dtype=np.int64)) for v, idx in kept], notes


def era_name(bin_spec: Mapping[str, Any]) -> str:
    if bin_spec.get("name"):
        return str(bin_spec["name"])
    lo, hi = bin_spec.get("min"), bin_spec.get("max")
    if lo is None:
        return f"<={hi}"
    if hi is None:
        return f">={lo}"
    return f"{lo}-{hi}"


def slices_by_era(
    rows: Sequence[Mapping[str, Any]],
    column: str = "review_year",
    bins: Sequence[Mapping[str, Any]] | None = None,
    min_items: int = 1,
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Slices by year ranges (``min``/``max`` inclusive, either open), and notes; by default
    the eras of the shipped default suite (``configs/benchmark/default.yaml``)."""
    if bins is None:
        bins = [b.as_dict() for b in era_bins()]
    years: list[int | None] = []
    bad = 0
    for row in rows:
        value = row.get(column)
        try:
            years.append(int(value) if value not in (None, "") else None)
        except (TypeError, ValueError):
            years.append(None)
            bad += 1
    out, notes = [], []
    if bad:
        notes.append(f"{bad} items with a {column} that is not a year are in no era slice")
    missing = sum(1 for y in years if y is None) - bad
    if missing:
        notes.append(f"{missing} items without '{column}' are in no era slice")
    for spec in bins:
        lo, hi = spec.get("min"), spec.get("max")
        idx = [
            i
            for i, y in enumerate(years)
            if y is not None and (lo is None or y >= int(lo)) and (hi is None or y <= int(hi))
        ]
        if len(idx) < min_items:
            notes.append(
                f"era slice {era_name(spec)} has {len(idx)} items (< {min_items}): skipped"
            )
            continue
        out.append((era_name(spec), np.asarray(idx, dtype=np.int64)))
    return out, notes


# ---------------------------------------------------------------------------- systems


@dataclass
class System:
    """Something that gives logits per task for a dataset, with its decision rule."""

    name: str
    kind: str
    description: str
    tasks: TaskSet
    predict: Callable[[EvalData], dict[str, np.ndarray]]
    info: dict[str, Any] = field(default_factory=dict)


def model_system(
    path: str | Path,
    suite_tasks: TaskSet,
    backend: str = "auto",
    batch_size: int = 32,
    name: str | None = None,
) -> System:
    """A trained model as a system; its heads must match the suite's tasks and labels."""
    source = resolve_model(path)
    classifier = load_classifier(source, backend)
    for task in suite_tasks:
        if task.name not in classifier.tasks.names:
            raise SettingsError(
                f"model {source.path} has no '{task.name}' head; the suite "
                f"scores {suite_tasks.names}"
            )
        if classifier.tasks[task.name].labels != task.labels:
            raise SettingsError(
                f"model {source.path}: labels of '{task.name}' differ from the "
                f"suite's task config ({classifier.tasks[task.name].labels} vs "
                f"{task.labels})"
            )
    label = name or source.name

    def predict(data: EvalData) -> dict[str, np.ndarray]:
        logits, _ = model_logits(
            classifier, data.texts, data.findings, batch_size, desc=f"{label} on {data.name}"
        )
        return logits

    files = {
        rel: file_sha256(source.model_dir / rel)
        for rel in MODEL_FILES
        if (source.model_dir / rel).is_file()
    }
    probe = "The Board AND Police should REVIEW the Policy"
    tokenizer = classifier.tokenizer
    uncased = tokenizer(probe)["input_ids"] == tokenizer(probe.lower())["input_ids"]
    return System(
        label,
        "model",
        f"trained model ({source.kind}, {classifier.backend} backend)",
        classifier.tasks,
        predict,
        {
            "path": shown_path(source.path),
            "kind": source.kind,
            "backend": classifier.backend,
            "files": files,
            "uncased": uncased,
        },
    )


def _training_data(
    names: Sequence[str], files: Mapping[str, Path], tasks: TaskSet, settings: dict[str, Any]
) -> EvalData:
    """The baselines' training items: the named splits, read and put together in order."""
    parts = [
        load_eval_data(files[name], tasks, settings, name=name, require_labels=True)
        for name in names
    ]
    if len(parts) == 1:
        return parts[0]
    return EvalData(
        name=" + ".join(names),
        records=[r for part in parts for r in part.records],
        present=[c for c in parts[0].present if all(c in p.present for p in parts)],
        settings=parts[0].settings,
    )


def baseline_system(
    name: str, tasks: TaskSet, train: EvalData, options: Mapping[str, Any] | None = None
) -> System:
    """A baseline fitted on ``train``."""
    settings = train.settings
    baseline = build_baseline(
        name,
        tasks,
        options,
        text_column=settings["text_column"],
        pair_column=settings.get("pair_column"),
    )
    baseline.fit(train.rows)
    return System(
        name,
        "baseline",
        baseline.description,
        baseline.tasks,
        lambda data: baseline.logits(data.rows),
        {"options": dict(options or {}), "fitted_on": shown_path(train.file) or train.name},
    )


# --------------------------------------------------------------------------- datasets


@dataclass
class BenchDataset:
    """A dataset of the suite: its data, where its predictions come from, its resamples."""

    data: EvalData
    kind: str
    description: str
    boot: ClusterBootstrap
    parent: str | None = None
    index: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.data.name

    def summary(self) -> dict[str, Any]:
        ids, missing = self.data.clusters()
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "parent": self.parent,
            "n_items": len(self.data.records),
            "n_reviews": int(ids.max()) + 1 - missing if len(ids) else 0,
            "tasks": list(self.data.present),
            "notes": list(self.data.notes),
            "file": shown_path(self.data.file),
        }


def _bootstrap(data: EvalData, boot: BootstrapSettings) -> ClusterBootstrap:
    ids, _ = data.clusters()
    return ClusterBootstrap(ids, resamples=boot.resamples, seed=boot.seed)


def build_datasets(
    main: EvalData,
    cfg: Mapping[str, Any] | BenchmarkSettings,
    boot_cfg: Mapping[str, Any] | BootstrapSettings | None = None,
    externals: Sequence[EvalData] = (),
) -> tuple[list[BenchDataset], list[str]]:
    """The evaluation split, external files, robustness variants and slices of a suite,
    and notes on slices left out.

    ``cfg`` is the suite's settings, or its ``datasets`` mapping with ``boot_cfg`` its
    ``bootstrap`` mapping (both checked as in :class:`scrclf.settings.BenchmarkSettings`).
    """
    if isinstance(cfg, BenchmarkSettings):
        variants, slices, boot_settings = cfg.variants, cfg.slices, cfg.bootstrap
    else:
        variants = VariantSettings.from_config(cfg.get("variants"))
        slices = SlicesSettings.from_config(cfg.get("slices"))
        boot_settings = (
            boot_cfg
            if isinstance(boot_cfg, BootstrapSettings)
            else BootstrapSettings.from_config(boot_cfg)
        )
    s = main.settings
    boot = _bootstrap(main, boot_settings)
    out = [BenchDataset(main, "test", f"the '{main.name}' split", boot)]
    for ext in externals:
        out.append(
            BenchDataset(
                ext, "external", f"external file {ext.file}", _bootstrap(ext, boot_settings)
            )
        )

    records = main.records
    made: list[tuple[str, list[Record], str]] = []
    if variants.no_finding and s.get("pair_column"):
        made.append(
            (
                "no_finding",
                without_finding(records, s["pair_column"]),
                "finding paragraph removed: the recommendation text alone",
            )
        )
    if variants.lowercase:
        made.append(
            (
                "lowercase",
                lowercased(records, s["text_column"], s.get("pair_column")),
                "text and finding lower-cased",
            )
        )
    if variants.typos is not None:
        rate, seed = variants.typos.rate, variants.typos.seed
        made.append(
            (
                f"typos_{round(100 * rate)}pct",
                with_typos(
                    records, rate, seed, s["text_column"], s.get("pair_column"), s["id_column"]
                ),
                f"a typo in {100 * rate:.0f}% of words of four or more letters (seed {seed})",
            )
        )
    if variants.truncate_words is not None:
        words = variants.truncate_words
        made.append(
            (
                f"first_{words}_words",
                truncated(records, words, s["text_column"]),
                f"recommendation text cut to its first {words} words",
            )
        )
    for suffix, recs, description in made:
        # Same items, same reviews: the clean data's resamples, so changes are paired.
        out.append(
            BenchDataset(
                main.with_records(f"{main.name}:{suffix}", recs),
                "variant",
                description,
                boot,
                parent=main.name,
            )
        )

    rows = main.rows
    found: list[tuple[str, np.ndarray, str]] = []
    notes: list[str] = []
    by_value = slices.addressee
    if by_value is not None:
        column = by_value.column
        got, n = slices_by_value(rows, column, by_value.min_items)
        found += [(f"{main.name}[{column}={v}]", idx, f"items addressed to {v}") for v, idx in got]
        notes += n
    era = slices.era
    if era is not None:
        column = era.column
        bins = [b.as_dict() for b in era.bins or ()]
        got, n = slices_by_era(rows, column, bins, era.min_items)
        found += [(f"{main.name}[era {v}]", idx, f"reviews from {v}") for v, idx in got]
        notes += n
    for name, idx, description in found:
        data = main.with_records(name, [records[i] for i in idx])
        out.append(
            BenchDataset(data, "slice", description, boot.subset(idx), parent=main.name, index=idx)
        )
    return out, notes


# ---------------------------------------------------------------------------- scoring


class Progress:
    """Lines on stderr with the time since the run started: a benchmark takes minutes,
    and a silent one looks hung."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"benchmark [{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    return None


def _entry(
    system: System, ds: BenchDataset, task: str, metrics: Mapping[str, Any], wanted: Sequence[str]
) -> dict[str, Any]:
    summary = ds.summary()
    entry: dict[str, Any] = {
        "system": system.name,
        "kind": system.kind,
        "dataset": ds.name,
        "task": task,
        "n_items": summary["n_items"],
        "n_reviews": summary["n_reviews"],
    }
    if task == MEAN:
        entry["macro_f1"] = metrics[HEADLINE]
        entry["macro_f1_interval"] = metrics.get(f"{HEADLINE}_interval")
        return entry
    m = metrics[task]
    for key in wanted:
        if key in m:
            entry[key] = m[key]
            if key in m.get("intervals", {}):
                entry[f"{key}_interval"] = m["intervals"][key]
    return entry


def _reps_of(reps: Mapping[str, Any], task: str, metric: str = "macro_f1") -> np.ndarray:
    return reps[HEADLINE if task == MEAN else task][metric]


def score_suite(
    systems: Sequence[System],
    datasets: Sequence[BenchDataset],
    confidence: float,
    wanted: Sequence[str],
    progress: Callable[[str], None] = _silent,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, Any]]]:
    """Score every system on every dataset; returns leaderboard entries, full results and
    the raw logits of every system on every dataset with its own inputs. ``progress`` is
    told of every step."""
    logits: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    own = [d for d in datasets if d.index is None]
    step, steps = 0, len(systems) * len(own)
    for system in systems:
        logits[system.name] = {}
        for ds in own:
            step += 1
            progress(
                f"predicting {step}/{steps}: {system.name} on {ds.name} "
                f"({len(ds.data.records)} items)"
            )
            logits[system.name][ds.name] = system.predict(ds.data)

    entries: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    reps: dict[tuple[str, str], Any] = {}
    for number, ds in enumerate(datasets, start=1):
        progress(
            f"scoring {number}/{len(datasets)}: {ds.name} "
            f"({len(systems)} systems, {ds.boot.resamples} resamples)"
        )
        results[ds.name] = {}
        for system in systems:
            source = logits[system.name][
                (ds.parent or ds.name) if ds.index is not None else ds.name
            ]
            metrics, r = score(
                system.tasks, source, ds.data, ds.boot, confidence, detailed=False, index=ds.index
            )
            results[ds.name][system.name] = metrics
            reps[(system.name, ds.name)] = r
            for task in [*ds.data.present, MEAN]:
                entries.append(_entry(system, ds, task, metrics, wanted))

    # Gaps to the best baseline (paired: same dataset, same resamples).
    by_key = {(e["system"], e["dataset"], e["task"]): e for e in entries}
    baselines = [s.name for s in systems if s.kind == "baseline"]
    for ds in datasets:
        for task in [*ds.data.present, MEAN]:
            scored = [b for b in baselines if (b, ds.name, task) in by_key]
            if not scored:
                continue
            best = max(scored, key=lambda b: by_key[(b, ds.name, task)]["macro_f1"])
            best_reps = _reps_of(reps[(best, ds.name)], task)
            for system in systems:
                e = by_key.get((system.name, ds.name, task))
                if e is None:
                    continue
                diff = _reps_of(reps[(system.name, ds.name)], task) - best_reps
                gap: dict[str, Any] = {
                    "baseline": best,
                    "value": e["macro_f1"] - by_key[(best, ds.name, task)]["macro_f1"],
                    "interval": interval(diff, confidence),
                }
                if task != MEAN:
                    # micro-F1 too, against the same baseline on the same resamples
                    ours, theirs = results[ds.name][system.name], results[ds.name][best]
                    gap["micro_f1"] = {
                        "value": ours[task]["micro_f1"] - theirs[task]["micro_f1"],
                        "interval": interval(
                            _reps_of(reps[(system.name, ds.name)], task, "micro_f1")
                            - _reps_of(reps[(best, ds.name)], task, "micro_f1"),
                            confidence,
                        ),
                    }
                e["gap_to_best_baseline"] = gap
    # Robustness: change against the clean data (same items, same resamples).
    for ds in datasets:
        if ds.kind != "variant":
            continue
        for system in systems:
            for task in [*ds.data.present, MEAN]:
                e, clean = (
                    by_key.get((system.name, ds.name, task)),
                    by_key.get((system.name, ds.parent, task)),
                )
                if e is None or clean is None or ds.parent is None:
                    continue
                diff = _reps_of(reps[(system.name, ds.name)], task) - _reps_of(
                    reps[(system.name, ds.parent)], task
                )
                e["change_vs_clean"] = {
                    "value": e["macro_f1"] - clean["macro_f1"],
                    "interval": interval(diff, confidence),
                }
    return entries, results, logits


def unchanged_variants(
    systems: Sequence[System],
    datasets: Sequence[BenchDataset],
    logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    entries: Sequence[dict[str, Any]],
) -> list[str]:
    """Notes on robustness variants that cannot change a system: its outputs on the variant
    are identical to those on the clean data (an uncased model given lower-cased text).
    Their leaderboard entries get ``unchanged: true``."""
    notes = []
    for ds in datasets:
        if ds.kind != "variant" or ds.parent is None:
            continue
        for system in systems:
            here, clean = logits[system.name][ds.name], logits[system.name][ds.parent]
            if not all(np.array_equal(here[n], clean[n]) for n in here):
                continue
            why = (
                ": its tokenizer is uncased (it lower-cases every input)"
                if ds.name.endswith(":lowercase") and system.info.get("uncased")
                else " (identical outputs on every item)"
            )
            notes.append(f"the variant {ds.name} cannot change {system.name}{why}")
            for e in entries:
                if e["system"] == system.name and e["dataset"] == ds.name:
                    e["unchanged"] = True
    return notes


# ------------------------------------------------------------------------- provenance


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = __version__ if name == "scrclf" else None
    return out


def _git_commit(where: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def provenance(
    command: str, data_files: Sequence[tuple[str, Path]], systems: Sequence[System]
) -> dict[str, Any]:
    """The exact command line, package versions and sha256 of every file the run read."""
    return {
        "command": command,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(),
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "data_files": [
            {
                "role": role,
                "path": shown_path(path),
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
            }
            for role, path in data_files
        ],
        "models": [{"name": s.name, **s.info} for s in systems if s.kind == "model"],
    }


# ------------------------------------------------------------------------------- run


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _container(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return dict(cfg)


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def output_dir(cfg: Mapping[str, Any] | BenchmarkSettings) -> Path:
    """``out_dir`` if set, else ``<report_root>/<suite>-<timestamp>`` (never an existing one)."""
    if isinstance(cfg, BenchmarkSettings):
        out_dir, report_root, suite = cfg.out_dir, cfg.report_root, cfg.suite
    else:
        out_dir, report_root, suite = cfg["out_dir"], cfg["report_root"], cfg["suite"]
    if out_dir:
        return Path(str(out_dir))
    base = Path(str(report_root)) / f"{suite}-{_timestamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def run_benchmark(cfg: Any, command: str | None = None) -> Path:
    """Run a suite config (see ``configs/benchmark/``) and write its report folder."""
    c = _container(cfg)
    command = command if command is not None else shlex.join(["python", *sys.argv])
    bench = BenchmarkSettings.from_config(c)
    suite = bench.suite
    tasks = TaskSet.from_config(c["task"]["tasks"])
    data_cfg = dict(c["data"])
    settings = data_settings(data_cfg)
    root = resolve_dir(data_cfg["dir"])
    splits = dict(data_cfg.get("splits") or {})
    train_splits, eval_split = bench.train_split, bench.eval_split
    for split in (*train_splits, eval_split):
        if split not in splits:
            raise DataError(f"split '{split}' is not in data.splits ({sorted(splits)})")
    if eval_split in train_splits:
        raise SettingsError(
            f"data.train_split includes the eval split '{eval_split}': the baselines would be "
            "scored on the items they were fitted on"
        )
    files = {split: root / str(splits[split]) for split in (*train_splits, eval_split)}
    baseline_names = list(bench.systems.baselines)
    models = list(bench.systems.models)
    if not models and not baseline_names:
        raise SettingsError(
            "the suite has no systems: set systems.models=[PATH,...] and/or systems.baselines"
        )
    unknown = [b for b in baseline_names if b not in BASELINES]
    if unknown:
        raise SettingsError(f"unknown baselines {unknown}; known: {sorted(BASELINES)}")

    progress = Progress()
    progress(f"suite {suite}: reading the data")
    main = load_eval_data(files[eval_split], tasks, settings, name=eval_split)
    if not main.present:
        raise DataError("the evaluation split has no label column", files[eval_split])
    external_columns = ColumnMap.from_config(bench.external_columns, "data.external_columns")
    externals = []
    for path in bench.external:
        ext = load_eval_data(
            path,
            tasks,
            settings,
            name=f"external:{Path(str(path)).stem}",
            columns=external_columns,
        )
        if not ext.present:
            raise DataError(
                "the external file has no label column of any task ("
                + ", ".join(t.column for t in tasks)
                + ")",
                path,
            )
        externals.append(ext)
    confidence = bench.bootstrap.confidence
    datasets, slice_notes = build_datasets(main, bench, externals=externals)
    for ds in datasets:
        if ds.kind in ("test", "external") and ds.boot.few_clusters:
            ds.data.notes.append(few_reviews_warning(ds.boot.n_clusters))

    systems: list[System] = []
    data_files: list[tuple[str, Path]] = [(eval_split, files[eval_split])]
    data_files += [("external", e.file) for e in externals if e.file is not None]
    names = _unique_names([*baseline_names, *(resolve_model(m).name for m in models)])
    for path, name in zip(models, names[len(baseline_names) :], strict=True):
        progress(f"loading model {name}")
        systems.append(
            model_system(
                path,
                tasks,
                bench.systems.backend,
                bench.systems.batch_size,
                name=name,
            )
        )
    if baseline_names:
        train = _training_data(train_splits, files, tasks, settings)
        data_files[:0] = [(split, files[split]) for split in train_splits]
        options = bench.systems.baseline_options
        for name in baseline_names:
            progress(f"fitting baseline {name} on {train.name} ({len(train.records)} items)")
            systems.append(baseline_system(str(name), tasks, train, options.get(name)))

    wanted = list(bench.metrics)
    entries, results, logits = score_suite(systems, datasets, confidence, wanted, progress)
    unchanged_notes = unchanged_variants(systems, datasets, logits, entries)

    board: dict[str, Any] = {
        "suite": suite,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "headline": "macro_f1",
        "main_dataset": main.name,
        "bootstrap": {**datasets[0].boot.describe(confidence)},
        "systems": [
            {
                "name": s.name,
                "kind": s.kind,
                "description": s.description,
                **{k: s.info[k] for k in ("path", "fitted_on") if k in s.info},
            }
            for s in systems
        ],
        "datasets": [d.summary() for d in datasets],
        "entries": entries,
        "notes": [
            note for ds in datasets if ds.kind in ("test", "external") for note in ds.data.notes
        ]
        + slice_notes
        + unchanged_notes,
        "provenance": provenance(command, data_files, systems),
    }

    profile_result = None
    if bench.profile:
        from scrclf.evaluation.domain_profile import profile as build_profile
        from scrclf.inference.classifier import format_predictions

        model_names = [s for s in systems if s.kind == "model"]
        best = max(
            model_names,
            key=lambda s: next(
                e["macro_f1"]
                for e in entries
                if e["system"] == s.name and e["dataset"] == main.name and e["task"] == MEAN
            ),
            default=None,
        )
        predictions = None
        if best is not None:
            sys_logits = logits[best.name][main.name]
            predictions = format_predictions(best.tasks, [sys_logits[n] for n in best.tasks.names])
            board["profile"] = {"system": best.name, "path": "profile/profile.md"}
        else:
            board["profile"] = {"system": None, "path": "profile/profile.md"}
            board["notes"].append(
                "no trained model in the suite: the profile shows the annotations only"
            )
        profile_result = build_profile(
            main.records, predictions, tasks, group_column=settings["group_column"] or "review_id"
        )

    if bench.agreement_file:
        progress("model-vs-human agreement on the double-coded items")
        board["agreement"] = agreement_results(
            bench.agreement_file, main, systems, logits, bench.bootstrap
        )

    reports = file_reports(systems, datasets, logits, confidence, plots=bench.plots)
    board["file_reports"] = [
        {"dataset": r["dataset"], "system": r["system"], "path": r["path"]} for r in reports
    ]
    board = finite(board)
    out = output_dir(bench)
    progress(f"writing the report to {out}")
    write_benchmark(
        out, board, finite(results), c, profile_result, plots=bench.plots, file_reports=reports
    )
    progress("done")
    return out


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "data"


def file_reports(
    systems: Sequence[System],
    datasets: Sequence[BenchDataset],
    logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    confidence: float,
    plots: bool = True,
) -> list[dict[str, Any]]:
    """For every trained model on every evaluated file (the eval split and each external
    file): the full report of ``scrclf evaluate`` (per-label tables, confusion matrices,
    calibration at stored and default decisions, per-item predictions, worst errors, the
    profile), to be written under ``files/<dataset>/<model>/``."""
    from scrclf.evaluation.domain_profile import profile as build_profile
    from scrclf.evaluation.evaluate import (
        CALIBRATED,
        DEFAULT,
        default_decisions,
        report_result,
        score_decisions,
    )
    from scrclf.evaluation.items import ERRORS_MD, ITEMS_CSV, ITEMS_JSONL, item_predictions
    from scrclf.inference.classifier import format_predictions

    out = []
    for ds in datasets:
        if ds.kind not in ("test", "external"):
            continue
        for system in systems:
            if system.kind != "model":
                continue
            tasks = system.tasks
            sys_logits = logits[system.name][ds.name]
            decisions = score_decisions(
                {CALIBRATED: tasks, DEFAULT: default_decisions(tasks)},
                sys_logits,
                ds.data,
                ds.boot,
                confidence,
            )
            model = {
                "path": system.info.get("path"),
                "model_dir": system.info.get("path"),
                "kind": system.info.get("kind"),
                "name": system.name,
                "backend": system.info.get("backend"),
            }
            result = report_result(model, ds.data, ds.boot, confidence, decisions)
            result["items"] = {"jsonl": ITEMS_JSONL, "csv": ITEMS_CSV, "errors": ERRORS_MD}
            result["profile"] = "profile/profile.md"
            s = ds.data.settings
            predictions = format_predictions(tasks, [sys_logits[n] for n in tasks.names])
            path = f"files/{_folder_name(ds.name)}/{_folder_name(system.name)}"
            out.append(
                {
                    "dataset": ds.name,
                    "system": system.name,
                    "path": path,
                    "tasks": tasks,
                    "result": finite(result),
                    "items": item_predictions(ds.data.rows, tasks, sys_logits, ds.data.present, s),
                    "profile": build_profile(
                        ds.data.records,
                        predictions,
                        tasks,
                        group_column=s["group_column"] or "review_id",
                    ),
                }
            )
    return out


def agreement_results(
    double_coding: str | Path,
    main: EvalData,
    systems: Sequence[System],
    logits: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    boot: BootstrapSettings,
) -> dict[str, Any]:
    """Each model's agreement with the two human coders on the double-coded items of the
    eval split, beside the humans' agreement on the same items and resamples."""
    from scrclf.evaluation.human_agreement import model_agreement, predictions_as_coder
    from scrclf.inference.classifier import format_predictions

    path = resolve_dir(double_coding)
    s = main.settings
    ids = [str(r.data[s["id_column"]]) for r in main.records]
    reviews = dict(zip(ids, main.groups, strict=True))
    out: dict[str, Any] = {"file": shown_path(path), "systems": {}, "notes": []}
    models = [m for m in systems if m.kind == "model"]
    if not models:
        out["notes"].append("no trained model in the suite: agreement not measured")
        return out
    if not path.is_file():
        raise DataError("double-coding file not found (agreement.file)", path)
    for system in models:
        sys_logits = logits[system.name][main.name]
        predictions = format_predictions(system.tasks, [sys_logits[n] for n in system.tasks.names])
        coder = predictions_as_coder(ids, system.tasks, predictions)
        try:
            result = model_agreement(
                path,
                coder,
                system.tasks,
                reviews,
                resamples=boot.resamples,
                seed=boot.seed,
                confidence=boot.confidence,
            )
        except DataError as err:
            if "share no item ids" not in str(err):
                raise
            out["notes"].append(
                f"no double-coded item is in the '{main.name}' split: agreement not measured"
            )
            return out
        out["systems"][system.name] = result
    return out


def write_benchmark(
    out: Path,
    board: Mapping[str, Any],
    results: Mapping[str, Any],
    suite_cfg: Mapping[str, Any],
    profile_result: Mapping[str, Any] | None,
    plots: bool = True,
    file_reports: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write the report folder atomically (complete, or not there at all)."""
    import yaml

    from scrclf.reporting.markdown import render_leaderboard

    board = {**board, "headline_chart": "headline.png" if plots else None}
    with atomic.directory(out, overwrite=False) as tmp:
        atomic.write_json(tmp / "leaderboard.json", board)
        atomic.write_json(tmp / "results.json", results)
        atomic.write_json(tmp / "provenance.json", board["provenance"])
        atomic.write_text(
            tmp / "suite.yaml", yaml.safe_dump(shown_paths(suite_cfg), sort_keys=False)
        )
        atomic.write_text(tmp / "leaderboard.md", render_leaderboard(board))
        if plots:
            from scrclf.reporting.plots import headline_chart

            rows = [
                {
                    "system": e["system"],
                    "kind": e["kind"],
                    "value": e["macro_f1"],
                    "interval": e.get("macro_f1_interval"),
                }
                for e in board["entries"]
                if e["dataset"] == board["main_dataset"] and e["task"] == MEAN
            ]
            rows.sort(key=lambda r: -(r["value"] or 0))
            headline_chart(
                rows,
                f"{board['suite']}: {HEADLINE} on {board['main_dataset']}",
                tmp / "headline.png",
            )
        if profile_result is not None:
            from scrclf.evaluation.domain_profile import write_profile

            write_profile(profile_result, tmp / "profile", chart=plots)
        from scrclf.evaluation.evaluate import write_report_files

        for report in file_reports:
            write_report_files(
                report["result"],
                tmp / report["path"],
                report["tasks"],
                plots=plots,
                profile_result=report["profile"],
                items=report["items"],
            )
    return out
