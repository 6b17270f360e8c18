"""Fine-tuning with the Hugging Face Trainer: from a composed config to a run directory.

A run directory holds:
  model/          the best model (save_pretrained, safetensors) with its tokenizer; loads alone
  metrics.json    per split and per task, at the calibrated decisions and at the defaults
  config.yaml     the resolved config that produced the run
  checkpoints/    Trainer checkpoints (training state for ``resume=true``; never shipped)
  tensorboard/    training curves

``trainer.loop`` picks the training loop: ``trainer`` (the Hugging Face Trainer, this
module; checkpoints, resume and DDP) or ``lean`` (the hand-written loop of
:mod:`scrclf.training.hand_loop` for large corpora on a GPU). Both read their inputs with
:func:`load_inputs` and end with :func:`finish_run`, so they write the same run directory.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrclf import atomic
from scrclf.calibration import calibrate
from scrclf.data.records import DataError, Record, build_dataset, encode_targets, load_splits
from scrclf.errors import TrainingConfigError  # noqa: F401 (re-exported)
from scrclf.evaluation.metrics import HEADLINE, compute_metrics, flatten
from scrclf.modeling.encoders import build_model, load_tokenizer
from scrclf.settings import DataSettings, DistillSettings, TrainerSettings
from scrclf.tasks import TEACHER_PREFIX, WIDE_OFFSET_PREFIX, TaskSet
from scrclf.training.refit import RefitReference, take_decisions

logger = logging.getLogger(__name__)

MAX_POS_WEIGHT = 30.0
# The resolved config, stored in each checkpoint so that a resume can be checked against it.
RUN_CONFIG_FILE = "scrclf_run_config.json"
LOOPS = ("trainer", "lean")

# Called after each evaluation on the validation split with (epoch, value of
# trainer.metric_for_best); it may raise to stop the run (e.g. optuna.TrialPruned).
ReportFn = Callable[[int, float], None]
# Returns (logits per task, targets per task) for one split, in any item order.
PredictFn = Callable[[str], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]


def _container(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


# --------------------------------------------------------------------------- tasks


def class_weights(task, rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Balanced weights from train frequencies.

    Multi-label: ``pos_weight = negatives / positives`` per label (capped at 30).
    Single-label: ``n / (k * count)``, as scikit-learn's "balanced".
    """
    n = len(rows)
    if task.is_multi_label:
        pos = Counter(label for row in rows for label in row[task.column])
        out = []
        for label in task.labels:
            p = pos.get(label, 0)
            out.append(MAX_POS_WEIGHT if p == 0 else min(MAX_POS_WEIGHT, (n - p) / p))
        return out
    counts = Counter(row[task.column] for row in rows)
    k = task.num_labels
    return [n / (k * counts[label]) if counts.get(label) else 1.0 for label in task.labels]


def prepare_tasks(task_cfg: Any, train_records: Sequence[Record]) -> TaskSet:
    tasks = TaskSet.from_config(_container(task_cfg))
    rows = [r.data for r in train_records]
    for task in tasks:
        if task.class_weighting == "balanced":
            task.class_weights = class_weights(task, rows)
    return tasks


def check_classes(tasks: TaskSet, split: str, records: Sequence[Record]) -> None:
    """Every task needs at least two classes in ``split``: with one, the model learns a
    constant and every score is meaningless."""
    for task in tasks:
        seen: set[str] = set()
        for rec in records:
            value = rec.data[task.column]
            seen.update(value if isinstance(value, list) else [value])
            if len(seen) > 1:
                break
        if len(seen) < 2:
            raise DataError(
                f"task '{task.name}' has only one class in split '{split}' "
                f"({', '.join(sorted(seen)) or 'none'}); a model cannot learn or be scored "
                "on one class",
                records[0].file if records else None,
            )


# ------------------------------------------------------------------------ checkpoints


def last_complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` whose state and weights were fully written."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = []
    for path in root.glob("checkpoint-*"):
        step = path.name.split("-")[-1]
        if (
            step.isdigit()
            and (path / "trainer_state.json").is_file()
            and (path / "model.safetensors").is_file()
            and (path / "optimizer.pt").is_file()
        ):
            found.append((int(step), path))
    return max(found)[1] if found else None


# --------------------------------------------------------------------------- threads


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once; cgroup quota applied).

    Falls back to the number of usable logical CPUs where the topology is not readable.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (
                    topo.joinpath("physical_package_id").read_text().strip(),
                    topo.joinpath("core_id").read_text().strip(),
                )
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores) or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return n


def configure_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads and return the number used.

    ``trainer.num_threads``: a number, or null for automatic: the physical cores shared out
    between the processes of this node (torchrun's ``LOCAL_WORLD_SIZE``). Automatic leaves
    an explicit ``OMP_NUM_THREADS`` alone. Hyper-threads add nothing to GEMM-bound training
    and oversubscribed OpenMP threads spin against each other.
    """
    import torch

    n = num_threads
    if n:
        n = int(n)
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        n = max(1, physical_cores() // local)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------- precision


def _cpuinfo_field(name: str, cpuinfo: str | Path) -> str | None:
    """The first ``name : value`` entry of ``cpuinfo`` (None where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags the CPU reports (empty where ``cpuinfo`` cannot be read)."""
    return set((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name, for benchmark records (the platform's word where ``cpuinfo``
    cannot be read)."""
    import platform

    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16).

    Elsewhere bf16 autocast is emulated and slower than fp32.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` becomes bf16 where the hardware computes it natively, else fp32."""
    if precision != "auto":
        return precision
    if device == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


# ----------------------------------------------------------------------------- inputs


@dataclass
class RunInputs:
    """Everything a training loop needs, read and encoded once."""

    cfg: dict[str, Any]
    run_dir: Path
    seed: int
    eval_splits: list[str]
    splits: dict[str, list[Record]]
    tasks: TaskSet
    tokenizer: Any
    model: Any
    datasets: dict[str, Any]
    # A refit (``refit_from``): train + validation are trained on, nothing picks a checkpoint
    # and the decisions are the reference run's.
    refit: RefitReference | None = None

    @property
    def trainer(self) -> TrainerSettings:
        return TrainerSettings.from_config(self.cfg["trainer"])


def with_wide_offsets(
    model,
    dataset,
    records: Sequence[Record],
    targets: Mapping[str, Any],
    tasks: TaskSet,
    group_column: str,
    seed: int,
):
    """The training ``dataset`` with a ``wide_offset_<task>`` column for each task in
    ``model.wide.residual``: each item's wide logits from a wide part fitted without its
    review's fold (``residual_folds`` folds by review, :func:`scrclf.training.folds.item_folds`).
    The model's loss on such a task is taken on the encoder's logits plus these, so the encoder
    learns what the n-grams miss; items' own n-grams never vouch for their labels, as they
    would with the wide part fitted on every training item. The task's wide weight is set to
    1 for the evaluations during training and refitted on validation afterwards."""
    from scrclf.modeling.wide import out_of_fold_wide_logits
    from scrclf.training.folds import item_folds

    wide = model.config.wide
    residual = [t for t in tasks if t.name in wide["residual"]]
    folds = item_folds(records, group_column, int(wide["residual_folds"]), seed)
    offsets = out_of_fold_wide_logits(
        model, dataset["input_ids"], targets, TaskSet(residual), folds, seed=seed
    )
    for task, values in zip(residual, offsets, strict=True):
        dataset = dataset.add_column(WIDE_OFFSET_PREFIX + task.name, values.tolist())
    wide["mix"] = {**(wide.get("mix") or {}), **{t.name: 1.0 for t in residual}}
    return dataset


def load_inputs(
    cfg_dict: Mapping[str, Any], run_dir: Path, refit: RefitReference | None = None
) -> RunInputs:
    """Read and validate the splits, prepare the tasks, build the model and encode the data.

    Evaluation splits are sorted by token length, so evaluation batches carry little padding
    (metrics do not depend on item order). With ``refit`` the training data is train +
    validation (:mod:`scrclf.training.refit`).
    """
    data_cfg, model_cfg = cfg_dict["data"], cfg_dict["model"]
    eval_splits = list(cfg_dict.get("eval_splits") or [])
    wanted = ["train", "validation"] + [s for s in eval_splits if s not in ("train", "validation")]
    data_settings = DataSettings.from_config(data_cfg)
    raw_tasks = cfg_dict["task"]["tasks"]
    splits = load_splits(data_cfg, TaskSet.from_config(raw_tasks), splits=wanted)
    tasks = prepare_tasks(raw_tasks, splits["train"])
    for split in ("train", "validation"):
        check_classes(tasks, split, splits[split])
    if refit is not None:
        splits["train"] = [*splits["train"], *splits.pop("validation")]
        tasks = prepare_tasks(raw_tasks, splits["train"])

    tokenizer = load_tokenizer(model_cfg)
    model = build_model(model_cfg, tasks, data_settings.max_length)
    encoder_cfg = model.config.encoder_config()
    data_settings.check_positions(
        getattr(encoder_cfg, "max_position_embeddings", None),
        str(model_cfg.get("encoder") or f"model={model_cfg.get('name', '?')}"),
    )
    datasets = {}
    for name, records in splits.items():
        ds = build_dataset(records, tokenizer, tasks, data_cfg)
        if name != "train":
            ds = ds.select(np.argsort(np.asarray(ds["length"]), kind="stable").tolist())
        datasets[name] = ds
    # Configs written before distillation existed have no such section: it is off.
    distill_cfg = cfg_dict.get("distill")
    distill = DistillSettings.from_config(distill_cfg) if distill_cfg is not None else None
    if distill is not None and distill.teacher:
        from scrclf.training.distill import teacher_logits

        text_col, pair_col = data_cfg.get("text_column", "text"), data_cfg.get("pair_column")
        rows = [r.data for r in splits["train"]]
        soft = teacher_logits(
            distill.teacher,
            tasks,
            [r[text_col] for r in rows],
            [r.get(pair_col) for r in rows] if pair_col else None,
        )
        for task in tasks:
            datasets["train"] = datasets["train"].add_column(
                TEACHER_PREFIX + task.name, soft[task.name].tolist()
            )
        model.distillation = (distill.weight, distill.temperature)
    trainer_settings = TrainerSettings.from_config(cfg_dict["trainer"])
    model.label_smoothing = trainer_settings.label_smoothing
    model.rdrop = trainer_settings.rdrop
    model.freeze_encoder(trainer_settings.freeze_layers, trainer_settings.freeze_word_embeddings)
    wide = model.config.wide
    if wide and wide["mode"] == "logreg":
        from scrclf.modeling.wide import fit_wide

        train_rows = [r.data for r in splits["train"]]
        train_targets = encode_targets(train_rows, tasks)
        fit_wide(
            model, datasets["train"]["input_ids"], train_targets, tasks, seed=int(cfg_dict["seed"])
        )
        if wide.get("residual"):
            datasets["train"] = with_wide_offsets(
                model,
                datasets["train"],
                splits["train"],
                train_targets,
                tasks,
                str(data_cfg.get("group_column") or "review_id"),
                seed=int(cfg_dict["seed"]),
            )
    return RunInputs(
        cfg=dict(cfg_dict),
        run_dir=run_dir,
        seed=int(cfg_dict["seed"]),
        eval_splits=eval_splits,
        splits=splits,
        tasks=tasks,
        tokenizer=tokenizer,
        model=model,
        datasets=datasets,
        refit=refit,
    )


# ---------------------------------------------------------------------------- finishing


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def metrics_fn(tasks: TaskSet):
    def compute(eval_pred) -> dict[str, float]:
        logits = _as_tuple(eval_pred.predictions)
        labels = _as_tuple(eval_pred.label_ids)
        return flatten(compute_metrics(tasks, logits, labels))

    return compute


def finish_run(
    inputs: RunInputs,
    predict: PredictFn,
    training: dict[str, Any],
    started: float,
    is_main: bool = True,
) -> dict[str, Any]:
    """Evaluate the best model, calibrate on validation, and write the run directory.

    ``predict`` runs the best model on a split. Metrics are computed at the default
    decisions (T=1, thresholds 0.5) and, after fitting temperatures and thresholds on
    validation, at the calibrated decisions. ``training["wall_time_s"]`` is set to the time
    since ``started`` (before the model is saved). Only the main process writes.
    """
    cfg_dict, tasks, eval_splits = inputs.cfg, inputs.tasks, inputs.eval_splits
    refit = inputs.refit
    fit_on = [] if refit is not None else ["validation"]
    wide = inputs.model.config.wide
    if wide and wide.get("residual") and wide.get("mix"):
        # The residual tasks' wide weight of 1 served the evaluations during training; the
        # encoder's logits alone are weighed beside the wide part after prediction.
        kept = {k: v for k, v in wide["mix"].items() if k not in wide["residual"]}
        inputs.model.config.wide = {**wide, "mix": kept or None}
    predictions = {
        split: predict(split) for split in fit_on + [s for s in eval_splits if s not in fit_on]
    }
    wide_report = None
    wide = inputs.model.config.wide
    if wide and wide["mode"] == "logreg":
        predictions, wide_report = _mix_wide(inputs, predictions)
    default_metrics = {
        s: compute_metrics(tasks, *predictions[s], detailed=True) for s in predictions
    }
    calibration = None
    if refit is not None:
        calibration = take_decisions(tasks, refit)
        inputs.model.config.tasks = tasks.to_list()
    elif cfg_dict.get("calibrate", True):
        calibration = calibrate(tasks, *predictions["validation"])
        inputs.model.config.tasks = tasks.to_list()
    final_metrics = {
        s: compute_metrics(tasks, *predictions[s], detailed=True)
        for s in predictions
        if s in eval_splits
    }
    summary = {
        "headline": HEADLINE,
        **{s: final_metrics[s] for s in final_metrics},
        "at_default_decisions": {
            s: default_metrics[s] for s in eval_splits if s in default_metrics
        },
        "calibration": calibration,
        "wide": wide_report,
        **({"refit": refit.describe(len(inputs.splits["train"]))} if refit is not None else {}),
        "training": {
            **training,
            "wall_time_s": time.time() - started,
            "n_items": {s: len(r) for s, r in inputs.splits.items()},
        },
    }
    if is_main:
        run_dir = inputs.run_dir
        with atomic.directory(run_dir / "model") as tmp:
            inputs.model.save_pretrained(tmp)
            inputs.tokenizer.save_pretrained(tmp)
        from omegaconf import OmegaConf

        atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg_dict)))
        atomic.write_json(run_dir / "metrics.json", _finite(summary))
        logger.info("run written to %s", run_dir)
        for split in eval_splits:
            if split in final_metrics:
                m = final_metrics[split]
                line = ", ".join(f"{t} macro-F1 {m[t]['macro_f1']:.3f}" for t in tasks.names)
                print(f"[{split}] {HEADLINE} {m[HEADLINE]:.3f} ({line})", flush=True)
    return summary


def _mix_wide(
    inputs: RunInputs, predictions: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Weigh the fitted wide part beside the trained encoder (logreg mode).

    ``predictions`` hold the encoder's logits alone (the wide weights are 0 during training).
    The weight per task is fitted on validation and stored in the model config; the returned
    predictions are the combined logits the saved model gives.
    """
    from scrclf.calibration import combine_wide, weigh_wide
    from scrclf.modeling.wide import wide_logits_of

    model = inputs.model
    wide = {s: wide_logits_of(model, inputs.datasets[s]["input_ids"]) for s in predictions}
    deep = {split: logits for split, (logits, _) in predictions.items()}
    refit = inputs.refit
    if refit is not None:
        if refit.wide_mix is None:
            raise TrainingConfigError(
                f"refit_from: {refit.run_dir}'s model has no fitted wide weights"
            )
        mix, logits = refit.wide_mix, combine_wide(inputs.tasks, refit.wide_mix, deep, wide)
    else:
        mix, logits = weigh_wide(inputs.tasks, deep, wide, predictions["validation"][1])
        logger.info("wide part weighed on validation: %s", mix)
    model.config.wide = {**model.config.wide, "mix": mix}
    combined = {
        split: (tuple(logits[split]), targets) for split, (_, targets) in predictions.items()
    }
    return combined, {"mix": mix}


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
