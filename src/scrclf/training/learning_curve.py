"""Learning curves: how the scores grow with the number of training reviews.

Every system (the trained model, and baselines such as ``tfidf_logreg``) is trained on
growing shares of the training reviews, several times with different seeds, and scored on
the eval split with review-bootstrap intervals (:mod:`scrclf.evaluation.bootstrap`).

* **By review, nested.** Repetition ``r`` shuffles the training reviews with seed ``r`` and
  takes the first ``ceil(f * n_reviews)`` of them for share ``f``, so every review of a
  smaller share is in each larger one and every item of a drawn review is kept.
* **Model.** The training config (``configs/train.yaml``, the same composition as
  ``scripts/train.py``) with ``train_overrides``; only ``data.splits.train`` changes
  (validation, used for the best checkpoint and calibration, stays whole) and the seed
  becomes ``seed + r``. The trained run is scored with its calibrated decisions.
* **Intervals.** All points are scored on the same review resamples (one bootstrap seed),
  so the mean over seeds of a share has its own interval: the spread, over resamples, of
  the per-resample mean over seeds. The spread between seeds is reported beside it.

Results go to one folder: ``points/<system>/f<share>_s<seed>.json`` per point, written as
soon as it is scored, and ``learning_curve.json``, ``.md`` and ``.png`` rewritten after
every point. A run that is stopped resumes where it stopped: points already written are
skipped (their settings must match, or the run is refused), and a model run cut short is
continued from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from scrclf import atomic
from scrclf.errors import SettingsError
from scrclf.evaluation.baselines import BASELINES
from scrclf.evaluation.bootstrap import ClusterBootstrap, interval
from scrclf.evaluation.evaluate import EvalData, file_sha256, finite, load_eval_data, score
from scrclf.evaluation.suites import System, baseline_system, model_system
from scrclf.settings import BootstrapSettings, _keys, _section, _typed, config_dir
from scrclf.tasks import HEADLINE, TaskSet

logger = logging.getLogger(__name__)

CURVE_CONFIG = "learning_curve.yaml"
MODEL = "model"
RESULT_STEM = "learning_curve"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CurveSettings:
    """The settings of ``configs/learning_curve.yaml``, checked."""

    fractions: tuple[float, ...]
    n_seeds: int
    systems: tuple[str, ...]
    train_overrides: tuple[str, ...]
    baseline_options: dict[str, dict[str, Any]]
    eval_split: str
    bootstrap: BootstrapSettings
    out_dir: str

    @classmethod
    def from_config(cls, cfg: Any, section: str = "learning_curve") -> CurveSettings:
        c = _section(cfg, section)
        _keys(c, section, {f for f in cls.__dataclass_fields__})
        fractions = tuple(_typed(section, "fractions", f, float) for f in _as_list(c["fractions"]))
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise SettingsError(
                f"{section}.fractions must be shares in (0, 1], got {list(fractions)}"
            )
        if len(set(fractions)) != len(fractions):
            raise SettingsError(f"{section}.fractions names a share twice: {list(fractions)}")
        systems = tuple(str(s) for s in _as_list(c["systems"]))
        known = (MODEL, *BASELINES)
        for system in systems:
            if system not in known:
                raise SettingsError(
                    f"{section}.systems: unknown system '{system}'; known: {', '.join(known)}"
                )
        if not systems:
            raise SettingsError(f"{section}.systems is empty")
        options = dict(_section(c["baseline_options"] or {}, f"{section}.baseline_options"))
        return cls(
            fractions=tuple(sorted(fractions)),
            n_seeds=_typed(section, "n_seeds", c["n_seeds"], int, minimum=1),
            systems=tuple(dict.fromkeys(systems)),
            train_overrides=tuple(str(o) for o in _as_list(c["train_overrides"])),
            baseline_options={str(k): dict(v or {}) for k, v in options.items()},
            eval_split=_typed(section, "eval_split", c["eval_split"], str),
            bootstrap=BootstrapSettings.from_config(c["bootstrap"], f"{section}.bootstrap"),
            out_dir=_typed(section, "out_dir", c["out_dir"], str),
        )

    @classmethod
    def with_options(
        cls, options: Mapping[str, Any] | None = None, configs: str | Path | None = None
    ) -> CurveSettings:
        """``learning_curve.yaml`` of the config folder ``configs`` (default: the shipped
        configs) with the settings of ``options`` (each replaced whole) put over it;
        ``None`` values are left out."""
        from omegaconf import OmegaConf

        path = Path(configs if configs is not None else config_dir()) / CURVE_CONFIG
        if not path.is_file():
            raise SettingsError(f"config not found: {path}")
        base = dict(_section(OmegaConf.load(path), "learning_curve"))
        given = {k: v for k, v in dict(options or {}).items() if v is not None}
        return cls.from_config({**base, **given})


def _as_list(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------------- subsampling


def review_order(reviews: Sequence[str], seed: int) -> list[str]:
    """The distinct reviews in a seeded random order (independent of their input order)."""
    distinct = sorted(set(reviews))
    rng = np.random.default_rng(seed)
    return [distinct[i] for i in rng.permutation(len(distinct))]


def reviews_for(order: Sequence[str], fraction: float) -> set[str]:
    """The first ``ceil(fraction * n)`` reviews of ``order`` (at least one): nested shares."""
    k = max(1, math.ceil(round(fraction * len(order), 9)))
    return set(order[:k])


# --------------------------------------------------------------------------- points


@dataclass(frozen=True)
class Point:
    system: str
    fraction: float
    seed: int

    @property
    def key(self) -> str:
        return f"f{self.fraction:g}_s{self.seed}"

    def path(self, out_dir: Path) -> Path:
        return out_dir / "points" / self.system / f"{self.key}.json"


@dataclass
class CurveData:
    """The composed training config, the training rows with their reviews, the eval data."""

    configs: Path
    train_cfg: Any
    train_file: Path
    train_lines: list[str]
    train_reviews: list[str]
    eval_data: EvalData
    tasks: TaskSet
    boot: ClusterBootstrap
    settings: dict[str, Any] = field(default_factory=dict)


def _compose(configs: Path, overrides: Sequence[str]):
    from scrclf.training.search import compose_config

    return compose_config(configs, overrides)


def load_curve_data(curve: CurveSettings, configs: Path) -> CurveData:
    """Compose the training config and read the train and eval splits it names."""
    from omegaconf import OmegaConf

    from scrclf.data.records import read_records, resolve_split_files
    from scrclf.evaluation.evaluate import resolve_dir

    cfg = _compose(configs, curve.train_overrides)
    data_cfg = dict(_section(cfg.data, "data"))
    data_cfg["dir"] = str(resolve_dir(data_cfg["dir"]))
    files = resolve_split_files(data_cfg)
    for split in ("train", curve.eval_split):
        if split not in files:
            raise SettingsError(
                f"learning_curve: the data config has no split '{split}' "
                f"(data.splits: {sorted(files)})"
            )
    group = data_cfg.get("group_column")
    if not group:
        raise SettingsError(
            "learning_curve: data.group_column is not set; shares are drawn by review"
        )
    tasks = TaskSet.from_config(OmegaConf.to_container(cfg.task.tasks, resolve=True))
    train_file = files["train"]
    records = read_records(train_file)
    lines = [json.dumps(r.data, ensure_ascii=False) for r in records]
    reviews = [str(r.data.get(group) or f"item:{r.line}") for r in records]
    eval_data = load_eval_data(
        files[curve.eval_split], tasks, data_cfg, name=curve.eval_split, require_labels=True
    )
    ids, _ = eval_data.clusters()
    boot = ClusterBootstrap(ids, resamples=curve.bootstrap.resamples, seed=curve.bootstrap.seed)
    return CurveData(configs, cfg, train_file, lines, reviews, eval_data, tasks, boot, data_cfg)


def setup_of(system: str, curve: CurveSettings, data: CurveData) -> dict[str, Any]:
    """What a point's result depends on besides its share and seed; a stored point made
    with another setup is not reused."""
    out: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "train_file_sha256": file_sha256(data.train_file),
        "eval_file_sha256": file_sha256(data.eval_data.file) if data.eval_data.file else None,
        "eval_split": curve.eval_split,
        "bootstrap": {
            "resamples": curve.bootstrap.resamples,
            "seed": curve.bootstrap.seed,
            "confidence": curve.bootstrap.confidence,
        },
    }
    if system == MODEL:
        out["train_overrides"] = list(curve.train_overrides)
    else:
        out["options"] = dict(curve.baseline_options.get(system, {}))
    return out


def _subset_file(data: CurveData, point: Point, work: Path) -> tuple[Path, int, int]:
    chosen = reviews_for(review_order(data.train_reviews, point.seed), point.fraction)
    lines = [
        line
        for line, review in zip(data.train_lines, data.train_reviews, strict=True)
        if review in chosen
    ]
    path = work / "data" / f"{point.key}.jsonl"
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path, len(chosen), len(lines)


def _train_model(
    curve: CurveSettings, data: CurveData, point: Point, train_file: Path, work: Path
) -> System:
    from scrclf.training import train
    from scrclf.training.run import last_complete_checkpoint
    from scrclf.training.search import as_override

    run_dir = work / "runs" / f"{MODEL}_{point.key}"
    resume = last_complete_checkpoint(run_dir / "checkpoints") is not None
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a run of ours cut short before its first checkpoint
    cfg = _compose(
        data.configs,
        [
            *curve.train_overrides,
            as_override("data.dir", data.settings["dir"]),
            as_override("data.splits.train", str(train_file.resolve())),
            as_override("seed", int(data.train_cfg.seed) + point.seed),
            as_override("paths.output_dir", str(run_dir.resolve())),
            "eval_splits=[]",
            as_override("resume", resume),
        ],
    )
    train(cfg, run_dir=run_dir)
    return model_system(run_dir, data.tasks, name=MODEL)


def run_point(
    point: Point, curve: CurveSettings, data: CurveData, out_dir: Path, keep_runs: bool = False
) -> dict[str, Any]:
    """Train one system on one share and seed, score it, and write its point file."""
    work = out_dir / "work"
    train_file, n_reviews, n_items = _subset_file(data, point, work)
    if point.system == MODEL:
        system = _train_model(curve, data, point, train_file, work)
    else:
        train_data = load_eval_data(train_file, data.tasks, data.settings, name="train")
        system = baseline_system(
            point.system, data.tasks, train_data, curve.baseline_options.get(point.system)
        )
    logits = system.predict(data.eval_data)
    metrics, reps = score(
        system.tasks,
        logits,
        data.eval_data,
        data.boot,
        curve.bootstrap.confidence,
        detailed=False,
    )
    tasks = [n for n in reps if n != HEADLINE]
    result = {
        "system": point.system,
        "fraction": point.fraction,
        "seed": point.seed,
        "train_reviews": n_reviews,
        "train_items": n_items,
        "setup": setup_of(point.system, curve, data),
        "mean_macro_f1": metrics[HEADLINE],
        "mean_macro_f1_interval": metrics[f"{HEADLINE}_interval"],
        "macro_f1": {t: metrics[t]["macro_f1"] for t in tasks},
        "macro_f1_interval": {t: metrics[t]["intervals"]["macro_f1"] for t in tasks},
        # Per-resample values: the seeds of a share are averaged resample by resample.
        # Rounded to 6 decimals: far below the spread between resamples.
        "replicates": {name: np.round(reps[name]["macro_f1"], 6) for name in (HEADLINE, *tasks)},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    result = finite(result)
    # one line: the file is mostly the replicates, data for this module rather than reading
    atomic.write_text(point.path(out_dir), json.dumps(result, separators=(",", ":")) + "\n")
    if point.system == MODEL and not keep_runs:
        shutil.rmtree(work / "runs" / f"{MODEL}_{point.key}", ignore_errors=True)
    (work / "data" / f"{point.key}.jsonl").unlink(missing_ok=True)
    return result


def stored_point(point: Point, setup: Mapping[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """The written result of ``point``; None when there is none. One made with another
    setup is refused: mixing them would make a curve of two experiments."""
    path = point.path(out_dir)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file is measured again
    expected = finite(setup)
    found = result.get("setup") or {}
    differs = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    if differs:
        raise SettingsError(
            f"{path}: this point was made with other settings ({', '.join(differs)} differ); "
            "write the curve to another out_dir, or remove the points folder to start over"
        )
    return result


# -------------------------------------------------------------------------- summary


def summarize(results: Sequence[Mapping[str, Any]], confidence: float) -> list[dict[str, Any]]:
    """One row per system and share: the mean over seeds with its bootstrap interval."""
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["system"], float(r["fraction"])), []).append(r)
    rows = []
    for (system, fraction), points in sorted(groups.items()):
        points = sorted(points, key=lambda p: p["seed"])
        values = np.asarray([p["mean_macro_f1"] for p in points], dtype=np.float64)
        row: dict[str, Any] = {
            "system": system,
            "fraction": fraction,
            "seeds": [p["seed"] for p in points],
            "train_reviews": float(np.mean([p["train_reviews"] for p in points])),
            "train_items": float(np.mean([p["train_items"] for p in points])),
            "mean_macro_f1": float(values.mean()),
            "mean_macro_f1_interval": interval(
                np.mean([p["replicates"][HEADLINE] for p in points], axis=0), confidence
            ),
            "seed_sd": float(values.std(ddof=1)) if len(values) > 1 else None,
            "seed_values": values.tolist(),
            "macro_f1": {},
        }
        for task in points[0]["macro_f1"]:
            row["macro_f1"][task] = {
                "mean": float(np.mean([p["macro_f1"][task] for p in points])),
                "interval": interval(
                    np.mean([p["replicates"][task] for p in points], axis=0), confidence
                ),
            }
        rows.append(row)
    return rows


def _fmt_interval(iv: Sequence[float] | None) -> str:
    return f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""


def markdown(report: Mapping[str, Any]) -> str:
    curve = report["settings"]
    conf = round(100 * curve["bootstrap"]["confidence"])
    tasks = list(report["rows"][0]["macro_f1"]) if report["rows"] else []
    lines = [
        "# Learning curve",
        "",
        f"Systems trained on shares of the {report['data']['train_reviews']} training reviews "
        f"({report['data']['train_items']} items; subsets by review, nested, "
        f"{curve['n_seeds']} seed(s) each) and scored on the {curve['eval_split']} split "
        f"({report['data']['eval_items']} items, {report['data']['eval_reviews']} reviews). "
        f"Mean over seeds; {conf}% interval from {curve['bootstrap']['resamples']} review "
        "resamples of the seed-averaged score; sd: spread between seeds.",
        "",
        f"Model training overrides: `{' '.join(curve['train_overrides']) or '(none)'}`. "
        f"Points done: {report['points_done']} of {report['points_planned']}.",
        "",
        "| system | share | reviews | items | seeds | mean macro-F1 | interval | sd |"
        + "".join(f" {t} |" for t in tasks),
        "|---|---|---|---|---|---|---|---|" + "---|" * len(tasks),
    ]
    for row in report["rows"]:
        sd = f"{row['seed_sd']:.3f}" if row["seed_sd"] is not None else ""
        lines.append(
            f"| {row['system']} | {row['fraction']:g} | {row['train_reviews']:.0f} "
            f"| {row['train_items']:.0f} | {len(row['seeds'])} | {row['mean_macro_f1']:.3f} "
            f"| {_fmt_interval(row['mean_macro_f1_interval'])} | {sd} |"
            + "".join(f" {row['macro_f1'][t]['mean']:.3f} |" for t in tasks)
        )
    lines.append("")
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    curve: CurveSettings,
    data: CurveData,
    results: Sequence[Mapping[str, Any]],
    planned: int,
) -> dict[str, Any]:
    from scrclf.reporting.plots import learning_curve_chart

    ids, _ = data.eval_data.clusters()
    rows = summarize(results, curve.bootstrap.confidence)
    points = [{k: v for k, v in r.items() if k != "replicates"} for r in results]
    report: dict[str, Any] = {
        # each point has its own finished_at; this is when the summary was last rewritten
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "fractions": list(curve.fractions),
            "n_seeds": curve.n_seeds,
            "systems": list(curve.systems),
            "train_overrides": list(curve.train_overrides),
            "baseline_options": curve.baseline_options,
            "eval_split": curve.eval_split,
            "bootstrap": {
                "resamples": curve.bootstrap.resamples,
                "seed": curve.bootstrap.seed,
                "confidence": curve.bootstrap.confidence,
            },
        },
        "data": {
            # names and digests, not paths: the report is meant to be committed
            "train_file": data.train_file.name,
            "train_file_sha256": file_sha256(data.train_file),
            "train_items": len(data.train_lines),
            "train_reviews": len(set(data.train_reviews)),
            "eval_file": data.eval_data.file.name if data.eval_data.file else None,
            "eval_items": len(data.eval_data.records),
            "eval_reviews": int(ids.max()) + 1 if len(ids) else 0,
        },
        "points_planned": planned,
        "points_done": len(results),
        "rows": rows,
        "points": points,
    }
    atomic.write_json(out_dir / f"{RESULT_STEM}.json", finite(report))
    atomic.write_text(out_dir / f"{RESULT_STEM}.md", markdown(report))
    if rows:
        learning_curve_chart(rows, points, out_dir / f"{RESULT_STEM}.png")
    return report


# ------------------------------------------------------------------------------ run


def plan(curve: CurveSettings) -> list[Point]:
    """Every point, baselines first (seconds) then the model (hours), small shares first."""
    systems = sorted(curve.systems, key=lambda s: s == MODEL)
    return [
        Point(system, fraction, seed)
        for system in systems
        for seed in range(curve.n_seeds)
        for fraction in curve.fractions
    ]


def run_learning_curve(
    curve: CurveSettings,
    out_dir: str | Path | None = None,
    keep_runs: bool = False,
    progress: Callable[[str], None] | None = None,
    configs: str | Path | None = None,
) -> dict[str, Any]:
    """Measure every point not yet written in ``out_dir``; returns the report written.

    ``configs``: the Hydra config folder the training config is composed from (default:
    the shipped configs).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir if out_dir is not None else curve.out_dir)
    data = load_curve_data(curve, Path(configs if configs is not None else config_dir()))
    points = plan(curve)
    setups = {s: setup_of(s, curve, data) for s in curve.systems}
    results: list[dict[str, Any]] = []
    todo: list[Point] = []
    for point in points:
        stored = stored_point(point, setups[point.system], out)
        if stored is None:
            todo.append(point)
        else:
            results.append(stored)
    say = progress or logger.info
    say(
        f"learning curve: {len(points)} points, {len(results)} already written in {out}, "
        f"{len(todo)} to measure"
    )
    write_report(out, curve, data, results, len(points))
    with tqdm(total=len(points), initial=len(results), desc="learning curve", unit="point") as bar:
        for point in todo:
            bar.set_postfix_str(f"{point.system} {point.key}")
            say(f"{point.system}: share {point.fraction:g}, seed {point.seed}")
            results.append(run_point(point, curve, data, out, keep_runs=keep_runs))
            write_report(out, curve, data, results, len(points))
            bar.update(1)
    work = out / "work"
    if work.is_dir() and not keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return write_report(out, curve, data, results, len(points))
