"""The model-selection study: train recipe variants, score them against TF-IDF, pick one.

A study is a YAML file (``benchmarks/model_selection.yaml``) listing variants, each a set of
Hydra overrides of ``configs/train.yaml`` and the seeds to train it with. For every variant
and seed the study trains a run (or reuses a finished one), then scores it on the validation
and test splits with review-bootstrap intervals, beside the TF-IDF baseline fitted on the
training split with the same resamples (paired differences).

Selection uses validation only: the chosen variant is the one with the best mean validation
macro-F1 among those whose training finished within the time budget. Test figures are
reported, never used to choose.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.calibration import calibrate, decide, probabilities
from scrclf.errors import SettingsError
from scrclf.evaluation.bootstrap import ClusterBootstrap, interval
from scrclf.evaluation.evaluate import (
    EvalData,
    data_settings,
    load_classifier,
    load_eval_data,
    model_logits,
    resolve_model,
    score,
)
from scrclf.evaluation.suites import baseline_system
from scrclf.settings import check_entry
from scrclf.tasks import HEADLINE, TaskSet
from scrclf.training.array_cache import cached_arrays, new_digest, texts_digest
from scrclf.training.folds import FoldPlan, train_fold, write_folds

logger = logging.getLogger(__name__)

SPLITS = ("validation", "test")
STUDY_KEYS = {
    "name",
    "baseline",
    "time_budget_s",
    "bootstrap",
    "variants",
    "out_of_fold",
    "ensembles",
}
ENSEMBLE_KEYS = {"name", "description", "members"}
VARIANT_KEYS = {"name", "description", "overrides", "seeds"}


@dataclass
class Variant:
    name: str
    description: str
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [42])


@dataclass
class Ensemble:
    """Runs of the study whose logits are averaged: a reference for what combining models
    (or distilling such a combination) could reach. Never selected as the default."""

    name: str
    description: str
    # Run names, <variant>-s<seed>.
    members: list[str]


@dataclass
class Study:
    name: str
    variants: list[Variant]
    baseline: str = "tfidf_logreg"
    time_budget_s: float | None = None
    resamples: int = 1000
    bootstrap_seed: int = 0
    # A run whose decisions are also fitted on out-of-fold predictions (scrclf.training.folds).
    out_of_fold: FoldPlan | None = None
    ensembles: list[Ensemble] = field(default_factory=list)


def _read_ensembles(raw: Any, file: Path, variants: Sequence[Variant]) -> list[Ensemble]:
    runs = [f"{v.name}-s{seed}" for v in variants for seed in v.seeds]
    out: list[Ensemble] = []
    if raw is None:
        return out
    if not isinstance(raw, list):
        raise SettingsError(f"{file}: ensembles must be a list")
    taken = {v.name for v in variants}
    for i, entry in enumerate(raw):
        where = f"{file}: ensembles[{i}]"
        entry = check_entry(entry, where, ENSEMBLE_KEYS, "name", "each ensemble")
        name = str(entry["name"])
        if name in taken:
            raise SettingsError(f"{where}: the name '{name}' is taken by a variant or ensemble")
        taken.add(name)
        members = entry.get("members") or []
        if not isinstance(members, list) or len(members) < 2:
            raise SettingsError(f"{where}: members must list at least two runs")
        for m in members:
            if m not in runs:
                raise SettingsError(
                    f"{where}: member '{m}' is not a run of the study (<variant>-s<seed>); "
                    f"known: {runs}"
                )
        if len(set(members)) != len(members):
            raise SettingsError(f"{where}: members must be distinct")
        out.append(Ensemble(name, str(entry.get("description", "")), [str(m) for m in members]))
    return out


def read_study(path: str | Path) -> Study:
    """A study file, checked: unknown keys, duplicate variant names and bad seeds are refused."""
    import yaml

    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"{file}: cannot read the study file ({err.strerror})") from err
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{file}: a study file is a mapping with 'variants'")
    unknown = set(raw) - STUDY_KEYS
    if unknown:
        raise SettingsError(f"{file}: unknown keys {sorted(unknown)}; known: {sorted(STUDY_KEYS)}")
    variants = []
    for i, entry in enumerate(raw.get("variants") or []):
        where = f"{file}: variants[{i}]"
        entry = check_entry(entry, where, VARIANT_KEYS, "name", "each variant")
        overrides = entry.get("overrides") or []
        seeds = entry.get("seeds") or [42]
        if not all(isinstance(o, str) for o in overrides):
            raise SettingsError(f"{where}: overrides must be strings like 'trainer.max_epochs=6'")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SettingsError(f"{where}: seeds must be integers")
        variants.append(
            Variant(str(entry["name"]), str(entry.get("description", "")), list(overrides), seeds)
        )
    if not variants:
        raise SettingsError(f"{file}: the study lists no variants")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise SettingsError(f"{file}: variant names must be distinct, got {names}")
    boot = raw.get("bootstrap") or {}
    budget = raw.get("time_budget_s")
    plan = None
    if raw.get("out_of_fold") is not None:
        plan = FoldPlan.from_config(raw["out_of_fold"], str(file))
        variant = next((v for v in variants if v.name == plan.variant), None)
        if variant is None:
            raise SettingsError(
                f"{file}: out_of_fold.variant '{plan.variant}' is not a variant; known: {names}"
            )
        if plan.seed not in variant.seeds:
            raise SettingsError(
                f"{file}: out_of_fold.seed {plan.seed} is not a seed of '{plan.variant}' "
                f"({variant.seeds})"
            )
    return Study(
        name=str(raw.get("name") or file.stem),
        variants=variants,
        baseline=str(raw.get("baseline", "tfidf_logreg")),
        time_budget_s=float(budget) if budget is not None else None,
        resamples=int(boot.get("resamples", 1000)),
        bootstrap_seed=int(boot.get("seed", 0)),
        out_of_fold=plan,
        ensembles=_read_ensembles(raw.get("ensembles"), file, variants),
    )


LOGITS_CACHE = "selection_logits.npz"


def run_dir(runs: Path, variant: Variant, seed: int) -> Path:
    return runs / f"{variant.name}-s{seed}"


def is_finished(path: Path) -> bool:
    return (path / "metrics.json").is_file() and (path / "model" / "config.json").is_file()


def train_variant(variant: Variant, seed: int, out: Path) -> None:
    """Train one run of a variant into ``out`` (evaluated on validation only)."""
    from scrclf.settings import compose
    from scrclf.training.main import train

    cfg = compose(
        "train",
        [
            *variant.overrides,
            f"seed={seed}",
            f"paths.output_dir={out}",
            "eval_splits=[validation]",
        ],
    )
    train(cfg)


def themes_per_item(task, logits: np.ndarray) -> float:
    return float(decide(task, probabilities(task, logits)).sum(axis=1).mean())


def label_shares(task, logits: np.ndarray) -> np.ndarray:
    """Share of items given each label (any position)."""
    return decide(task, probabilities(task, logits)).mean(axis=0)


def _share_gap(task, shares: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """The largest gap between a label's predicted share of items and its annotated share."""
    gap = np.abs(shares - targets.mean(axis=0))
    return {"share_gap_max": float(gap.max()), "share_gap_label": task.labels[int(gap.argmax())]}


def _summary(
    tasks: TaskSet,
    logits: Mapping[str, np.ndarray],
    data: EvalData,
    boot: ClusterBootstrap,
    baseline: tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]],
) -> dict[str, Any]:
    metrics, reps = score(tasks, logits, data, boot, detailed=False)
    base_metrics, base_reps = baseline
    targets = data.targets(tasks)
    out: dict[str, Any] = {HEADLINE: metrics[HEADLINE], "tasks": {}}
    out[f"{HEADLINE}_interval"] = metrics[f"{HEADLINE}_interval"]
    diff = reps[HEADLINE]["macro_f1"] - base_reps[HEADLINE]["macro_f1"]
    out["gap"] = {
        HEADLINE: [metrics[HEADLINE] - base_metrics[HEADLINE], interval(diff)],
    }
    for task in tasks:
        if task.name not in metrics:
            continue
        m = metrics[task.name]
        entry = {
            "micro_f1": m["micro_f1"],
            "macro_f1": m["macro_f1"],
            "micro_f1_interval": m["intervals"].get("micro_f1"),
            "macro_f1_interval": m["intervals"].get("macro_f1"),
        }
        for key in ("micro_f1", "macro_f1"):
            d = reps[task.name][key] - base_reps[task.name][key]
            entry[f"gap_{key}"] = [m[key] - base_metrics[task.name][key], interval(d)]
        if task.is_multi_label:
            entry["per_item"] = themes_per_item(task, logits[task.name])
            entry["annotated_per_item"] = float(targets[task.name].sum(axis=1).mean())
            entry.update(
                _share_gap(task, label_shares(task, logits[task.name]), targets[task.name])
            )
            # The codebook's primary theme is the first listed; the model's is its top score.
            index = task.label2id()
            primary = np.asarray([index[row[task.column][0]] for row in data.rows])
            top = np.asarray(logits[task.name]).argmax(axis=1)
            entry["primary_accuracy"] = float((top == primary).mean())
        out["tasks"][task.name] = entry
    return out


def _training_record(path: Path) -> dict[str, Any]:
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    training = metrics.get("training", {})
    return {
        "time_to_best_s": training.get("time_to_best_s"),
        "train_runtime_s": training.get("train_runtime_s"),
        "epochs_run": training.get("epochs_run"),
        "best_checkpoint": training.get("best_checkpoint"),
        "num_threads": training.get("num_threads"),
        "validation_at_training": metrics.get("validation", {}).get(HEADLINE),
    }


@dataclass
class StudyInputs:
    """What every scored run of a study shares: the tasks, the data of each split, the
    review resamples of validation and test, and the baseline's scores on them."""

    tasks: TaskSet
    settings: dict[str, Any]
    data: dict[str, EvalData]
    boots: dict[str, ClusterBootstrap]
    baseline_scores: dict[str, Any]
    header: dict[str, Any]


def study_inputs(study: Study, data_dir: str | Path | None = None) -> StudyInputs:
    """Load the splits of the training config's corpus (or of ``data_dir``), draw the
    study's review resamples and score its baseline, fitted on the training split."""
    from scrclf.settings import compose, task_set

    tasks = task_set()
    cfg = compose("train")
    root = Path(str(data_dir)) if data_dir is not None else Path(str(cfg.data.dir))
    settings = data_settings(dict(cfg.data))
    files = {s: root / str(cfg.data.splits[s]) for s in ("train", *SPLITS)}
    data = {s: load_eval_data(f, tasks, settings, name=s) for s, f in files.items()}
    boots = {
        s: ClusterBootstrap(data[s].clusters()[0], study.resamples, study.bootstrap_seed)
        for s in SPLITS
    }
    base = baseline_system(study.baseline, tasks, data["train"])
    baseline_scores = {
        split: score(tasks, base.predict(data[split]), data[split], boots[split], detailed=False)
        for split in SPLITS
    }
    header = {
        "baseline": study.baseline,
        "bootstrap": {"resamples": study.resamples, "seed": study.bootstrap_seed},
        "data": {s: _describe(data[s], files[s]) for s in files},
    }
    return StudyInputs(tasks, settings, data, boots, baseline_scores, header)


def run_study(
    study: Study,
    runs: str | Path,
    out_dir: str | Path,
    train: bool = True,
    data_dir: str | Path | None = None,
    trainer: Callable[[Variant, int, Path], None] = train_variant,
    fold_trainer: Callable[[Sequence[str], Path, Path, int, Path], None] = train_fold,
) -> dict[str, Any]:
    """Train what is missing, score every run, write ``results.json`` and ``results.md``.

    ``runs`` holds one folder per variant and seed (``<variant>-s<seed>``); finished runs are
    reused, so a study can be extended or resumed. ``train=False`` scores finished runs only;
    a run that is not in ``runs`` then keeps its row from the earlier ``results.json`` in
    ``out_dir`` if that scored the same data with the same resamples and the run's recipe is
    unchanged (an ensemble, if every member missing here was kept), and so do the
    out-of-fold scores.
    """
    from omegaconf import OmegaConf

    from scrclf.atomic import write_json, write_text
    from scrclf.settings import compose

    runs, out_dir = Path(runs), Path(out_dir)
    inputs = study_inputs(study, data_dir)
    tasks, settings, data = inputs.tasks, inputs.settings, inputs.data
    boots, baseline_scores, header = inputs.boots, inputs.baseline_scores, inputs.header
    earlier = _earlier_results(out_dir, header) if not train else None

    def same_recipe(a: Sequence[str], b: Sequence[str]) -> bool:
        if list(a) == list(b):
            return True
        first, second = (OmegaConf.to_container(compose("train", list(x))) for x in (a, b))
        return first == second

    rows: list[dict[str, Any]] = []
    outputs: dict[str, RunOutputs] = {}
    carried: set[str] = set()  # runs not here whose earlier rows are kept
    for variant in study.variants:
        for seed in variant.seeds:
            path = run_dir(runs, variant, seed)
            if not is_finished(path):
                kept = _earlier_row(earlier, variant.name, seed, variant.overrides, same_recipe)
                if kept is not None:
                    logger.info("%s: not here; its earlier row is kept", path.name)
                    rows.append(kept)
                    carried.add(path.name)
                    continue
                if not train:
                    logger.warning("%s: not trained, skipped", path.name)
                    continue
                logger.info("training %s (seed %d) into %s", variant.name, seed, path)
                trainer(variant, seed, path)
            classifier = load_classifier(resolve_model(path), backend="torch")
            outputs[path.name] = run_outputs(
                classifier, tasks, data, SPLITS, cache=path / LOGITS_CACHE
            )
            row: dict[str, Any] = {
                "variant": variant.name,
                "description": variant.description,
                "overrides": variant.overrides,
                "seed": seed,
                "training": _training_record(path),
            }
            row.update(_scored(tasks, outputs[path.name], data, boots, baseline_scores))
            rows.append(row)
            logger.info(
                "%s seed %d: validation %s %.3f, test %.3f",
                variant.name,
                seed,
                HEADLINE,
                row["validation"][HEADLINE],
                row["test"][HEADLINE],
            )
    for ensemble in study.ensembles:
        missing = [m for m in ensemble.members if m not in outputs]
        if missing:
            kept = _earlier_row(
                earlier, ensemble.name, None, ensemble.members, lambda a, b: list(a) == list(b)
            )
            if kept is not None and carried.issuperset(missing):
                logger.info(
                    "%s: members %s not here; its earlier row is kept", ensemble.name, missing
                )
                rows.append(kept)
                continue
            logger.warning("%s: members %s not trained, skipped", ensemble.name, missing)
            continue
        records = [_training_record(runs / m) for m in ensemble.members]
        times = [r["time_to_best_s"] for r in records]
        row = {
            "variant": ensemble.name,
            "description": ensemble.description,
            "members": ensemble.members,
            "ensemble": True,
            "seed": None,
            "training": {"time_to_best_s": sum(times) if None not in times else None},
        }
        averaged = average_outputs([outputs[m] for m in ensemble.members], ensemble.name)
        row.update(_scored(tasks, averaged, data, boots, baseline_scores))
        rows.append(row)
        logger.info(
            "%s: validation %s %.3f, test %.3f",
            ensemble.name,
            HEADLINE,
            row["validation"][HEADLINE],
            row["test"][HEADLINE],
        )
    oof = None
    if study.out_of_fold is not None:
        oof = out_of_fold(
            study,
            runs,
            tasks,
            data,
            settings,
            boots,
            baseline_scores,
            outputs,
            train=train,
            fold_trainer=fold_trainer,
        )
    if oof is None and earlier is not None and study.out_of_fold is not None:
        plan = study.out_of_fold
        previous = earlier.get("out_of_fold")
        if previous and (previous.get("variant"), previous.get("seed")) == (
            plan.variant,
            plan.seed,
        ):
            logger.info("out-of-fold runs not here; the earlier out-of-fold scores are kept")
            oof = previous
    result = {
        "study": study.name,
        "baseline": study.baseline,
        "time_budget_s": study.time_budget_s,
        "bootstrap": header["bootstrap"],
        "data": header["data"],
        "baseline_scores": {
            split: _baseline_summary(tasks, baseline_scores[split][0]) for split in SPLITS
        },
        "runs": rows,
        "selected": select(rows, study.time_budget_s),
        "out_of_fold": oof,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", result)
    write_text(out_dir / "results.md", format_study(result, tasks))
    return result


def _earlier_results(out_dir: Path, header: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study's earlier ``results.json`` where it scored the same splits (file names and
    sizes), baseline and resamples, else None: its rows may stand for runs that are not on
    this machine when a study is scored without training."""
    file = out_dir / "results.json"
    if not file.is_file():
        return None
    try:
        earlier = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("%s: earlier results unreadable (%s); not kept", file, err)
        return None
    if any(earlier.get(key) != value for key, value in header.items()):
        logger.warning("%s: earlier results scored other data or resamples; not kept", file)
        return None
    return earlier


def _earlier_row(
    earlier: Mapping[str, Any] | None,
    variant: str,
    seed: int | None,
    recipe: Sequence[str],
    same_recipe: Callable[[Sequence[str], Sequence[str]], bool],
) -> dict[str, Any] | None:
    """The earlier row of ``variant`` and ``seed`` if it was trained with the same recipe
    (``recipe``: the variant's overrides, or an ensemble's members), with the recipe as the
    study now writes it: overrides that compose to the same config count as the same."""
    for row in (earlier or {}).get("runs", []):
        if row.get("variant") != variant or row.get("seed") != seed:
            continue
        key = "members" if seed is None else "overrides"
        if row.get(key) is None or not same_recipe(row[key], recipe):
            return None
        return {**row, key: list(recipe)}
    return None


def _fingerprint(data: Mapping[str, EvalData], splits: Sequence[str] = SPLITS) -> str:
    """A digest of the texts and findings of the scored splits, in order."""
    digest = new_digest()
    for split in splits:
        texts_digest(digest, data[split].texts, data[split].findings, prefix=f"{split}\x1f")
    return digest.hexdigest()


def _cached_outputs(
    cache: Path | None,
    data: Mapping[str, EvalData],
    compute: Callable[[], dict[str, np.ndarray]],
    splits: Sequence[str] = SPLITS,
) -> dict[str, np.ndarray]:
    """``compute()`` (named arrays), kept in ``cache`` (``.npz``) for the same split texts: a
    finished run does not change, so scoring it again under a new rule skips the forward
    passes."""
    return cached_arrays(cache, _fingerprint(data, splits), compute)


@dataclass
class RunOutputs:
    """A run's logits per split and task, in the tasks' order: ``deep`` is the model's output
    (its encoder alone when it has a fitted wide part), ``wide`` the fitted wide part's
    logits (None without one)."""

    deep: dict[str, list[np.ndarray]]
    wide: dict[str, list[np.ndarray]] | None


def run_outputs(
    classifier,
    tasks: TaskSet,
    data: Mapping[str, EvalData],
    splits: Sequence[str] = SPLITS,
    cache: Path | None = None,
) -> RunOutputs:
    """A run's logits on ``splits`` of ``data``, split into encoder and fitted wide part where
    it has one. With ``cache``, the forward passes are kept there and reused."""
    names = [t.name for t in tasks]

    def run(split: str) -> dict[str, np.ndarray]:
        return model_logits(classifier, data[split].texts, data[split].findings, 64, desc=split)[0]

    model = getattr(classifier.engine, "model", None)
    wide = getattr(getattr(model, "config", None), "wide", None)
    if model is None or not wide or wide.get("mode") != "logreg":

        def plain() -> dict[str, np.ndarray]:
            return {f"{split}/{n}": v for split in splits for n, v in run(split).items()}

        arrays = _cached_outputs(cache, data, plain, splits)
        return RunOutputs(
            {split: [arrays[f"{split}/{n}"] for n in names] for split in splits}, None
        )
    from scrclf.modeling.wide import wide_logits_of

    def parts_of() -> dict[str, np.ndarray]:
        saved = model.config.wide
        model.config.wide = {**wide, "mix": {name: 0.0 for name in model.task_names}}
        arrays = {}
        try:
            for split in splits:
                out = run(split)
                pairs = data[split].findings if classifier.text_pair else None
                enc, _ = classifier.encode(data[split].texts, pairs)
                by_name = dict(
                    zip(model.task_names, wide_logits_of(model, enc["input_ids"]), strict=True)
                )
                for n in names:
                    arrays[f"{split}/deep/{n}"] = out[n]
                    arrays[f"{split}/wide/{n}"] = by_name[n]
        finally:
            model.config.wide = saved
        return arrays

    arrays = _cached_outputs(cache, data, parts_of, splits)
    return RunOutputs(
        deep={split: [arrays[f"{split}/deep/{n}"] for n in names] for split in splits},
        wide={split: [arrays[f"{split}/wide/{n}"] for n in names] for split in splits},
    )


def combine(
    tasks: TaskSet, outputs: RunOutputs, targets: Mapping[str, np.ndarray], fit_on: str
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float] | None]:
    """Logits per split and task name; a fitted wide part is weighed beside the encoder on
    the ``fit_on`` split (:func:`scrclf.calibration.weigh_wide`) with ``targets`` of it."""
    names = [t.name for t in tasks]
    if outputs.wide is None:
        return {s: dict(zip(names, v, strict=True)) for s, v in outputs.deep.items()}, None
    from scrclf.calibration import weigh_wide

    mix, logits = weigh_wide(
        tasks, outputs.deep, outputs.wide, [targets[n] for n in names], fit_on=fit_on
    )
    return {s: dict(zip(names, v, strict=True)) for s, v in logits.items()}, mix


def average_outputs(members: Sequence[RunOutputs], name: str = "ensemble") -> RunOutputs:
    """The mean of several runs' logits, encoder and fitted wide part apart (the wide weights
    are then fitted once for the average). All members have a fitted wide part or none."""
    with_wide = [m.wide is not None for m in members]
    if any(with_wide) and not all(with_wide):
        raise SettingsError(
            f"{name}: members with and without a fitted wide part cannot be averaged"
        )

    def mean(parts: Sequence[Mapping[str, list[np.ndarray]]]) -> dict[str, list[np.ndarray]]:
        return {
            split: [np.mean([p[split][i] for p in parts], axis=0) for i in range(len(arrays))]
            for split, arrays in parts[0].items()
        }

    wide = mean([m.wide for m in members if m.wide is not None]) if all(with_wide) else None
    return RunOutputs(deep=mean([m.deep for m in members]), wide=wide)


def annotated_count_scores(task, logits: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Scores of a multi-label task when each item gets its ``k`` best-scoring labels, ``k``
    its annotated label count: what the logits reach when the number of labels is known.
    Against the decision rule's scores it separates what a better count could gain from
    what only a better ranking can."""
    from sklearn.metrics import f1_score

    from scrclf.evaluation.theme_rules_probe import top_k

    counts = targets.sum(axis=1).astype(int)
    chosen = top_k(logits, counts)
    y = targets.astype(np.int64)
    return {
        # As the evaluation scores multi-label decisions (scrclf.evaluation.metrics).
        "micro_f1": float(f1_score(y, chosen, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y, chosen, average="macro", zero_division=0)),
        "per_item": float(counts.mean()),
        "annotated_per_item": float(counts.mean()),
        **_share_gap(task, chosen.mean(axis=0), targets),
    }


def _scored(
    tasks: TaskSet,
    outputs: RunOutputs,
    data: Mapping[str, EvalData],
    boots: Mapping[str, ClusterBootstrap],
    baseline_scores: Mapping[str, Any],
) -> dict[str, Any]:
    """One run's (or ensemble's) scores: the wide part weighed and every decision refitted
    on validation under the current task config, then validation and test summaries, the
    decision-rule comparison and the themes at their annotated count on test."""
    val_targets = data["validation"].targets(tasks)
    logits, mix = combine(tasks, outputs, val_targets, "validation")
    run_tasks = _recalibrated(tasks, logits["validation"], val_targets)
    # The same logits with plain per-label F1 thresholds, for the decision-rule table.
    plain = _recalibrated(tasks, logits["validation"], val_targets, plain=True)
    out: dict[str, Any] = {"wide_mix": mix}
    for split in SPLITS:
        out[split] = _summary(
            run_tasks, logits[split], data[split], boots[split], baseline_scores[split]
        )
    out["test_plain_thresholds"] = _summary(
        plain, logits["test"], data["test"], boots["test"], baseline_scores["test"]
    )["tasks"].get("themes")
    themes = next((t for t in run_tasks if t.is_multi_label), None)
    if themes is not None:
        out["test_annotated_count"] = annotated_count_scores(
            themes, logits["test"][themes.name], data["test"].targets(tasks)[themes.name]
        )
    return out


def oof_dir(runs: Path, plan: FoldPlan) -> Path:
    """Where a fold plan's files (``files/``) and fold runs (``fold<i>/``) live."""
    return runs / "oof" / f"{plan.variant}-s{plan.seed}-k{plan.folds}-split{plan.split_seed}"


def out_of_fold(
    study: Study,
    runs: Path,
    tasks: TaskSet,
    data: Mapping[str, EvalData],
    settings: Mapping[str, Any],
    boots: Mapping[str, ClusterBootstrap],
    baseline_scores: Mapping[str, Any],
    scored: Mapping[str, RunOutputs],
    train: bool = True,
    fold_trainer: Callable[[Sequence[str], Path, Path, int, Path], None] = train_fold,
) -> dict[str, Any] | None:
    """Decisions of one finished run fitted on out-of-fold predictions instead of validation.

    Train + validation are split into k folds by review; for each fold a run of the same
    variant and seed is trained on the other folds, and its logits on the held-out fold are
    kept. The run's temperatures, thresholds and wide weights are then fitted on those
    held-out logits of every train + validation item, and the run is scored on validation
    and test with them (its own logits from ``scored``, the study's outputs by run name).
    None when the run or a fold run is missing and ``train`` is False.
    """
    plan = study.out_of_fold
    assert plan is not None
    variant = next(v for v in study.variants if v.name == plan.variant)
    main = run_dir(runs, variant, plan.seed)
    folder = oof_dir(runs, plan)
    if main.name not in scored:
        logger.warning("%s: not trained; out-of-fold decisions skipped", main.name)
        return None
    records = data["train"].records + data["validation"].records
    group = str(settings.get("group_column") or "review_id")
    files = write_folds(records, group, plan.folds, plan.split_seed, folder / "files")
    fold_runs = [folder / f"fold{i}" for i in range(plan.folds)]
    for i, ((train_file, held_file), out) in enumerate(zip(files, fold_runs, strict=True)):
        if is_finished(out):
            continue
        if not train:
            logger.warning("%s: fold %d not trained; out-of-fold decisions skipped", folder, i)
            return None
        logger.info("training %s fold %d of %d into %s", variant.name, i + 1, plan.folds, out)
        fold_trainer(variant.overrides, train_file, held_file, plan.seed, out)

    names = [t.name for t in tasks]
    deep: list[list[np.ndarray]] = []
    wide: list[list[np.ndarray]] | None = []
    held_targets: list[dict[str, np.ndarray]] = []
    reviews: set[Any] = set()
    for (_, held_file), out in zip(files, fold_runs, strict=True):
        held = load_eval_data(held_file, tasks, settings, name="held_out")
        classifier = load_classifier(resolve_model(out), backend="torch")
        parts = run_outputs(
            classifier, tasks, {"held_out": held}, ("held_out",), out / LOGITS_CACHE
        )
        deep.append(parts.deep["held_out"])
        if parts.wide is None or wide is None:
            wide = None
        else:
            wide.append(parts.wide["held_out"])
        held_targets.append(held.targets(tasks))
        reviews.update(held.groups)
    oof_targets = {n: np.concatenate([t[n] for t in held_targets]) for n in names}

    def joined(chunks: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(names))]

    own = scored[main.name]
    outputs = RunOutputs(
        deep={"oof": joined(deep), **own.deep},
        wide={"oof": joined(wide), **own.wide} if wide is not None and own.wide else None,
    )
    logits, mix = combine(tasks, outputs, oof_targets, "oof")
    run_tasks = _recalibrated(tasks, logits["oof"], oof_targets)
    result: dict[str, Any] = {
        "variant": plan.variant,
        "seed": plan.seed,
        "folds": plan.folds,
        "split_seed": plan.split_seed,
        "items": int(len(oof_targets[names[0]])),
        "reviews": len(reviews),
        "wide_mix": mix,
        "fold_training": [_training_record(out) for out in fold_runs],
    }
    for split in SPLITS:
        result[split] = _summary(
            run_tasks, logits[split], data[split], boots[split], baseline_scores[split]
        )
    logger.info(
        "%s seed %d, decisions out of fold (%d items): validation %.3f, test %.3f",
        plan.variant,
        plan.seed,
        result["items"],
        result["validation"][HEADLINE],
        result["test"][HEADLINE],
    )
    return result


def rerender(study: Study, out_dir: str | Path) -> dict[str, Any]:
    """Select again and rewrite ``results.md`` from a study's ``results.json``, without
    scoring (after a change of the time budget or of the table's layout)."""
    from scrclf.atomic import write_json, write_text
    from scrclf.settings import task_set

    out_dir = Path(out_dir)
    file = out_dir / "results.json"
    if not file.is_file():
        raise SettingsError(f"{file}: no study results to render; run the study first")
    result = json.loads(file.read_text(encoding="utf-8"))
    result["time_budget_s"] = study.time_budget_s
    result["selected"] = select(result["runs"], study.time_budget_s)
    write_json(file, result)
    write_text(out_dir / "results.md", format_study(result, task_set()))
    return result


def _recalibrated(
    current: TaskSet,
    logits: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    plain: bool = False,
) -> TaskSet:
    """A copy of the current task config with decisions fitted on ``logits`` (``plain``:
    per-label F1 thresholds, without share tolerance or count calibration)."""
    tasks = TaskSet.from_config(current.to_list())
    if plain:
        for task in tasks:
            task.count_calibration = False
            task.share_tolerance = None
    calibrate(tasks, [logits[t.name] for t in tasks], [targets[t.name] for t in tasks])
    return tasks


def _describe(data: EvalData, file: Path) -> dict[str, Any]:
    ids, missing = data.clusters()
    return {
        "file": file.name,
        "n_items": len(data.records),
        "n_reviews": int(ids.max()) + 1 - missing if len(ids) else 0,
    }


def _baseline_summary(tasks: TaskSet, metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {HEADLINE: metrics[HEADLINE]}
    for task in tasks:
        if task.name in metrics:
            out[task.name] = {
                "micro_f1": metrics[task.name]["micro_f1"],
                "macro_f1": metrics[task.name]["macro_f1"],
            }
    return out


def variant_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean validation and test headline over seeds, seed spread, time."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["variant"], {"val": [], "test": [], "time": []})
        entry = out[row["variant"]]
        entry["val"].append(row["validation"][HEADLINE])
        entry["test"].append(row["test"][HEADLINE])
        entry["time"].append(row["training"].get("time_to_best_s"))
    return {
        name: {
            "validation": float(np.mean(e["val"])),
            "test": float(np.mean(e["test"])),
            "test_seed_sd": float(np.std(e["test"], ddof=1)) if len(e["test"]) > 1 else None,
            "seeds": len(e["val"]),
            "time_to_best_s": (
                float(np.mean([t for t in e["time"] if t is not None]))
                if any(t is not None for t in e["time"])
                else None
            ),
        }
        for name, e in out.items()
    }


def select(rows: Sequence[Mapping[str, Any]], budget_s: float | None) -> dict[str, Any] | None:
    """The variant with the best validation headline within the time budget (ensembles are
    references, never selected), variants compared on the seeds they share.

    A variant run on one seed is not compared with another's mean over three: each pair is
    compared by their mean validation over the seeds both have (over all their seeds when they
    share none). The selected variant is at least as good as every other in its pair; among
    several such, or where none is (a cycle), the best mean validation, then the most seeds.
    """
    kept = [r for r in rows if not r.get("ensemble")]
    means = variant_means(kept)
    allowed = {
        n: m
        for n, m in means.items()
        if budget_s is None or (m["time_to_best_s"] is not None and m["time_to_best_s"] <= budget_s)
    }
    if not allowed:
        return None
    by_seed: dict[str, dict[Any, float]] = {}
    for row in kept:
        by_seed.setdefault(row["variant"], {})[row.get("seed")] = row["validation"][HEADLINE]

    def holds(a: str, b: str) -> bool:
        shared = by_seed[a].keys() & by_seed[b].keys()
        if not shared:
            return allowed[a]["validation"] >= allowed[b]["validation"]
        mine = float(np.mean([by_seed[a][s] for s in shared]))
        theirs = float(np.mean([by_seed[b][s] for s in shared]))
        return mine >= theirs

    unbeaten = [a for a in allowed if all(holds(a, b) for b in allowed if b != a)]
    name = max(
        unbeaten or list(allowed),
        key=lambda n: (allowed[n]["validation"], allowed[n]["seeds"]),
    )
    by = f"validation {HEADLINE}, each pair of variants on the seeds they share"
    return {"variant": name, "by": by, **allowed[name]}


def _ci(value: float, bounds: Sequence[float] | None, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if not bounds or bounds[0] is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(bounds[0])}, {fmt.format(bounds[1])}]"


def _score_cells(row: Mapping[str, Any]) -> list[str]:
    """A scored run's table cells: validation and test headline, themes micro-F1 and its gap
    to the baseline, themes / evidence / action strength macro-F1, themes per item and the
    largest theme share gap."""
    t = row["test"]["tasks"]
    th = t.get("themes", {})
    return [
        f"{row['validation'][HEADLINE]:.3f}",
        _ci(row["test"][HEADLINE], row["test"][f"{HEADLINE}_interval"]),
        _ci(th.get("micro_f1", float("nan")), th.get("micro_f1_interval")),
        _ci(th["gap_micro_f1"][0], th["gap_micro_f1"][1], signed=True) if th else "",
        _ci(th.get("macro_f1", float("nan")), th.get("macro_f1_interval")),
        _ci(t["evidence"]["macro_f1"], t["evidence"]["macro_f1_interval"])
        if "evidence" in t
        else "",
        _ci(t["action_strength"]["macro_f1"], t["action_strength"]["macro_f1_interval"])
        if "action_strength" in t
        else "",
        f"{th['per_item']:.2f} ({th['annotated_per_item']:.2f})" if th else "",
        f"{th['share_gap_max']:.3f} ({th['share_gap_label']})" if th else "",
    ]


def _seed_cell(row: Mapping[str, Any]) -> str:
    if row.get("ensemble"):
        return "mean of " + ", ".join(row["members"])
    return str(row["seed"])


def format_study(result: Mapping[str, Any], tasks: TaskSet) -> str:
    """The study as Markdown: one row per run, then the per-variant means and the choice."""
    base = result["baseline_scores"]["test"]
    lines = [
        f"# Model selection: `{result['study']}`",
        "",
        f"Test figures with 95% review-bootstrap intervals ({result['bootstrap']['resamples']} "
        f"resamples); gaps are paired differences to `{result['baseline']}` on the same "
        "resamples. Selection uses validation only.",
        "",
        f"`{result['baseline']}` on test: {HEADLINE} {base[HEADLINE]:.3f}; "
        + "; ".join(
            f"{t.name} micro {base[t.name]['micro_f1']:.3f} / macro {base[t.name]['macro_f1']:.3f}"
            for t in tasks
            if t.name in base
        ),
        "",
        "| variant | seed | val mean macro-F1 | test mean macro-F1 | themes micro-F1 | "
        "themes micro gap | themes macro-F1 | evidence macro-F1 | action_strength macro-F1 | "
        "themes/item (annotated) | max theme share gap | primary theme accuracy | "
        "time to best (s) |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["runs"]:
        th = row["test"]["tasks"].get("themes", {})
        time_s = row["training"].get("time_to_best_s")
        cells = [
            row["variant"],
            _seed_cell(row),
            *_score_cells(row),
            f"{th['primary_accuracy']:.3f}" if th else "",
            f"{time_s:.0f}" if time_s is not None else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| variant | what changed | seeds | val mean macro-F1 | test mean macro-F1 (seed sd) |",
    ]
    lines.append("| :--- | :--- | ---: | ---: | ---: |")
    described = {r["variant"]: r["description"] for r in result["runs"]}
    for name, m in variant_means(result["runs"]).items():
        sd = f" ({m['test_seed_sd']:.3f})" if m["test_seed_sd"] is not None else ""
        lines.append(
            f"| {name} | {described[name]} | {m['seeds']} | {m['validation']:.3f} | "
            f"{m['test']:.3f}{sd} |"
        )
    lines += [
        "",
        "Decision rules on test (themes): per-label F1 thresholds alone, against the codebook's "
        "rule (share tolerance and label-count calibration), both fitted on validation; and, for "
        "reference, each item's best-scoring themes in its annotated number (the same scores "
        "when the number of themes is known).",
        "",
        "| variant | seed | rule | themes micro-F1 | themes macro-F1 | themes/item (annotated) | "
        "max theme share gap |",
        "| :--- | ---: | :--- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["runs"]:
        for rule, th in (
            ("F1 thresholds", row.get("test_plain_thresholds")),
            ("codebook", row["test"]["tasks"].get("themes")),
            ("annotated count", row.get("test_annotated_count")),
        ):
            if not th:
                continue
            lines.append(
                f"| {row['variant']} | {_seed_cell(row)} | {rule} | {th['micro_f1']:.3f} | "
                f"{th['macro_f1']:.3f} | {th['per_item']:.2f} ({th['annotated_per_item']:.2f}) | "
                f"{th['share_gap_max']:.3f} ({th['share_gap_label']}) |"
            )
    oof = result.get("out_of_fold")
    if oof:
        lines += _oof_lines(result, oof)
    chosen = result.get("selected")
    lines.append("")
    if chosen:
        budget = result.get("time_budget_s")
        within = (
            f" among variants reaching their best checkpoint within {budget:.0f} s"
            if budget
            else ""
        )
        lines.append(
            f"Selected by {chosen['by']}{within}: **{chosen['variant']}** "
            f"(validation {chosen['validation']:.3f})."
        )
    else:
        lines.append("No variant met the time budget.")
    return "\n".join(lines) + "\n"


def _oof_lines(result: Mapping[str, Any], oof: Mapping[str, Any]) -> list[str]:
    """The out-of-fold table: one run scored with decisions fitted on validation, then on
    out-of-fold predictions."""
    same = next(
        (r for r in result["runs"] if r["variant"] == oof["variant"] and r["seed"] == oof["seed"]),
        None,
    )
    n_val = result["data"]["validation"].get("n_items")
    lines = [
        "",
        f"Decisions fitted out of fold: `{oof['variant']}` seed {oof['seed']}, its temperatures, "
        f"thresholds and wide weights fitted on the held-out predictions of {oof['folds']} "
        f"fold runs over train + validation ({oof['items']} items, {oof['reviews']} reviews; "
        f"split seed {oof['split_seed']}), against the same run fitted on validation.",
        "",
        "| fitted on | items | val mean macro-F1 | test mean macro-F1 | themes micro-F1 | "
        "themes micro gap | themes macro-F1 | evidence macro-F1 | action_strength macro-F1 | "
        "themes/item (annotated) | max theme share gap |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("validation", n_val, same)] if same else []
    rows.append(("out of fold", oof["items"], oof))
    for label, items, row in rows:
        cells = [label, str(items) if items is not None else "", *_score_cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
