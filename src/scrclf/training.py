"""Fine-tuning with the Hugging Face Trainer: from a composed config to a run directory.

A run directory holds:
  model/          the best model (save_pretrained, safetensors) with its tokenizer; loads alone
  metrics.json    per split and per task, at the calibrated decisions and at the defaults
  config.yaml     the resolved config that produced the run
  checkpoints/    Trainer checkpoints (training state for ``resume=true``; never shipped)
  tensorboard/    training curves

``trainer.loop`` picks the training loop: ``trainer`` (the Hugging Face Trainer, this
module; checkpoints, resume and DDP) or ``lean`` (the hand-written loop of
:mod:`scrclf.gpu_training` for large corpora on a GPU). Both read their inputs with
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

from . import atomic
from .calibration import fit_temperature, probabilities, tune_thresholds
from .data import MultiTaskCollator, Record, build_dataset, load_splits
from .encoders import build_model, load_tokenizer
from .metrics import HEADLINE, compute_metrics, flatten
from .tasks import TaskSet

logger = logging.getLogger(__name__)

MAX_POS_WEIGHT = 30.0
LOOPS = ("trainer", "lean")

# Called after each evaluation on the validation split with (epoch, value of
# trainer.metric_for_best); it may raise to stop the run (e.g. optuna.TrialPruned).
ReportFn = Callable[[int, float], None]
# Returns (logits per task, targets per task) for one split, in any item order.
PredictFn = Callable[[str], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]


class TrainingConfigError(ValueError):
    pass


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


# ------------------------------------------------------------------------ checkpoints


def last_complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` whose state and weights were fully written."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = []
    for path in root.glob("checkpoint-*"):
        step = path.name.split("-")[-1]
        if step.isdigit() and (path / "trainer_state.json").is_file() and \
                (path / "model.safetensors").is_file() and (path / "optimizer.pt").is_file():
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
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores) or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return n


def configure_threads(trainer_cfg: Mapping[str, Any]) -> int:
    """Set torch's intra-op threads and return the number used.

    ``trainer.num_threads``: a number, or null for automatic: the physical cores shared out
    between the processes of this node (torchrun's ``LOCAL_WORLD_SIZE``). Automatic leaves
    an explicit ``OMP_NUM_THREADS`` alone. Hyper-threads add nothing to GEMM-bound training
    and oversubscribed OpenMP threads spin against each other.
    """
    import torch

    n = trainer_cfg.get("num_threads")
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


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16).

    Elsewhere bf16 autocast is emulated and slower than fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


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

    @property
    def trainer_cfg(self) -> dict[str, Any]:
        return self.cfg["trainer"]


def load_inputs(cfg_dict: Mapping[str, Any], run_dir: Path) -> RunInputs:
    """Read and validate the splits, prepare the tasks, build the model and encode the data.

    Evaluation splits are sorted by token length, so evaluation batches carry little padding
    (metrics do not depend on item order).
    """
    data_cfg, model_cfg = cfg_dict["data"], cfg_dict["model"]
    eval_splits = list(cfg_dict.get("eval_splits") or [])
    wanted = ["train", "validation"] + [s for s in eval_splits if s not in ("train", "validation")]
    raw_tasks = cfg_dict["task"]["tasks"]
    splits = load_splits(data_cfg, TaskSet.from_config(raw_tasks), splits=wanted)
    tasks = prepare_tasks(raw_tasks, splits["train"])

    tokenizer = load_tokenizer(model_cfg)
    model = build_model(model_cfg, tasks, int(data_cfg.get("max_length", 256)))
    datasets = {}
    for name, records in splits.items():
        ds = build_dataset(records, tokenizer, tasks, data_cfg)
        if name != "train":
            ds = ds.select(np.argsort(np.asarray(ds["length"]), kind="stable").tolist())
        datasets[name] = ds
    return RunInputs(cfg=dict(cfg_dict), run_dir=run_dir, seed=int(cfg_dict.get("seed", 42)),
                     eval_splits=eval_splits, splits=splits, tasks=tasks, tokenizer=tokenizer,
                     model=model, datasets=datasets)


# ---------------------------------------------------------------------------- finishing


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def metrics_fn(tasks: TaskSet):
    def compute(eval_pred) -> dict[str, float]:
        logits = _as_tuple(eval_pred.predictions)
        labels = _as_tuple(eval_pred.label_ids)
        return flatten(compute_metrics(tasks, logits, labels))

    return compute


def calibrate(tasks: TaskSet, logits: Sequence[np.ndarray], targets: Sequence[np.ndarray],
              min_positives: int = 5) -> dict[str, Any]:
    """Fit a temperature per task and per-label thresholds (multi-label) on held-out data.

    Updates ``tasks`` in place and returns a record of what was fitted.
    """
    report: dict[str, Any] = {}
    for task, task_logits, task_targets in zip(tasks, logits, targets, strict=True):
        temperature = fit_temperature(task, task_logits, task_targets)
        task.temperature = temperature
        entry: dict[str, Any] = {"temperature": temperature}
        if task.is_multi_label:
            probs = probabilities(task, task_logits)
            thresholds, how = tune_thresholds(probs, task_targets, min_positives=min_positives)
            task.thresholds = thresholds
            entry["thresholds"] = dict(zip(task.labels, thresholds, strict=True))
            entry["threshold_source"] = dict(zip(task.labels, how, strict=True))
        report[task.name] = entry
    return report


def finish_run(inputs: RunInputs, predict: PredictFn, training: dict[str, Any],
               started: float, is_main: bool = True) -> dict[str, Any]:
    """Evaluate the best model, calibrate on validation, and write the run directory.

    ``predict`` runs the best model on a split. Metrics are computed at the default
    decisions (T=1, thresholds 0.5) and, after fitting temperatures and thresholds on
    validation, at the calibrated decisions. ``training["wall_time_s"]`` is set to the time
    since ``started`` (before the model is saved). Only the main process writes.
    """
    cfg_dict, tasks, eval_splits = inputs.cfg, inputs.tasks, inputs.eval_splits
    predictions = {split: predict(split) for split in ["validation"] + [
        s for s in eval_splits if s != "validation"]}
    default_metrics = {s: compute_metrics(tasks, *predictions[s], detailed=True) for s in predictions}
    calibration = None
    if cfg_dict.get("calibrate", True):
        calibration = calibrate(tasks, *predictions["validation"])
        inputs.model.config.tasks = tasks.to_list()
    final_metrics = {s: compute_metrics(tasks, *predictions[s], detailed=True) for s in predictions
                     if s in eval_splits}
    summary = {
        "headline": HEADLINE,
        **{s: final_metrics[s] for s in final_metrics},
        "at_default_decisions": {s: default_metrics[s] for s in eval_splits if s in default_metrics},
        "calibration": calibration,
        "training": {**training, "wall_time_s": time.time() - started,
                     "n_items": {s: len(r) for s, r in inputs.splits.items()}},
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


# --------------------------------------------------------------------------- training


def training_arguments(trainer_cfg: Mapping[str, Any], run_dir: Path, tasks: TaskSet, seed: int):
    from transformers import TrainingArguments

    t = trainer_cfg
    precision = str(t.get("precision", "fp32"))
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise TrainingConfigError(
            f"trainer.precision must be fp32, bf16, fp16 or auto, got {precision!r}")
    device = str(t.get("device", "cpu"))
    if device not in ("cpu", "cuda", "auto"):
        raise TrainingConfigError(f"trainer.device must be cpu, cuda or auto, got {device!r}")
    precision = resolve_precision(precision, device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainingConfigError("trainer.device=cuda but no CUDA GPU is visible; use trainer=cpu")
    metric = str(t.get("metric_for_best", HEADLINE))
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=float(t["max_epochs"]),
        per_device_train_batch_size=int(t["batch_size"]),
        per_device_eval_batch_size=int(t.get("eval_batch_size", t["batch_size"])),
        learning_rate=float(t["learning_rate"]),
        weight_decay=float(t.get("weight_decay", 0.0)),
        warmup_steps=float(t.get("warmup_ratio", 0.0)),
        lr_scheduler_type=str(t.get("lr_scheduler", "linear")),
        gradient_accumulation_steps=int(t.get("grad_accum_steps", 1)),
        max_grad_norm=float(t.get("max_grad_norm", 1.0)),
        optim=str(t.get("optim", "adamw_torch")),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        train_sampling_strategy="group_by_length" if t.get("group_by_length", True) else "random",
        length_column_name="length",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=int(t.get("save_total_limit", 2)),
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=not metric.endswith("loss"),
        logging_strategy="steps",
        logging_steps=int(t.get("logging_steps", 20)),
        logging_first_step=True,
        report_to="none",
        label_names=tasks.names,
        remove_unused_columns=False,
        # The loss is a per-process mean; without this the logged loss under DDP is
        # multiplied by the world size.
        average_tokens_across_devices=False,
        dataloader_num_workers=int(t.get("dataloader_workers", 0)),
        seed=int(seed),
        data_seed=int(seed),
        disable_tqdm=False,
        save_only_model=False,
        ddp_find_unused_parameters=False,
    )


def head_learning_rate(trainer_cfg: Mapping[str, Any]) -> float | None:
    """The heads' learning rate: ``learning_rate x head_lr_scale`` (None: the same as the encoder).

    A scale rather than a rate, so that ``learning_rate=0`` freezes the whole model and a
    search over ``learning_rate`` moves both together.
    """
    scale = trainer_cfg.get("head_lr_scale")
    if scale is None or float(scale) == 1.0:
        return None
    if float(scale) < 0:
        raise TrainingConfigError(f"trainer.head_lr_scale must be >= 0, got {scale}")
    return float(trainer_cfg["learning_rate"]) * float(scale)


def _trainer_class():
    """The Trainer with sequential evaluation and an optional learning rate for the heads."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class ScrClfTrainer(Trainer):
        def __init__(self, *args, head_learning_rate: float | None = None, **kwargs):
            self.head_learning_rate = head_learning_rate
            super().__init__(*args, **kwargs)

        def _get_eval_sampler(self, eval_dataset):
            # Evaluation splits are sorted by length (load_inputs): reading them in order
            # keeps padding minimal, where the length-grouped sampler would shuffle them.
            if self.args.world_size <= 1 and eval_dataset is not None:
                return SequentialSampler(eval_dataset)
            return super()._get_eval_sampler(eval_dataset)

        def create_optimizer(self, model=None):
            if self.head_learning_rate is None or self.optimizer is not None:
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            groups: dict[tuple[bool, bool], list] = {}
            for name, param in opt_model.named_parameters():
                if param.requires_grad:
                    groups.setdefault((name.startswith("heads."), name in decay), []).append(param)
            param_groups = [
                {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0,
                 "lr": self.head_learning_rate if is_head else self.args.learning_rate}
                for (is_head, decays), params in sorted(groups.items())]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("params", None)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
            return self.optimizer

    return ScrClfTrainer


def _run_clock(started: float, metric: str, report: ReportFn | None):
    """A callback timing the best checkpoint and passing each evaluation to ``report``."""
    from transformers import TrainerCallback

    class RunClock(TrainerCallback):
        def __init__(self):
            self.first_step_s: float | None = None
            self.time_to_best_s: float | None = None
            self.step_time_s = 0.0
            self._step_began: float | None = None
            self.start_epoch = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first_step_s is None:
                # after a resume, the epochs already done are not timed here
                self.start_epoch = float(state.epoch or 0.0)
            self._step_began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._step_began is not None:
                self.step_time_s += time.perf_counter() - self._step_began
            if self.first_step_s is None:
                self.first_step_s = time.time() - started

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            key = metric if metric.startswith("eval_") else f"eval_{metric}"
            if report is not None and metrics and key in metrics:
                report(int(round(state.epoch or 0)), float(metrics[key]))

        def on_save(self, args, state, control, **kwargs):
            best = state.best_model_checkpoint or ""
            if best.endswith(f"checkpoint-{state.global_step}"):
                self.time_to_best_s = time.time() - started

    return RunClock()


def train(cfg: Any, run_dir: str | Path | None = None, report: ReportFn | None = None) -> dict[str, Any]:
    """Train, calibrate, evaluate and save one run. Returns the metrics written.

    ``report`` (optional) is called after each validation evaluation with the epoch and the
    value of ``trainer.metric_for_best``; hyperparameter search uses it for pruning.
    """
    from transformers import set_seed

    started = time.time()
    cfg_dict = _container(cfg)
    run_dir = Path(run_dir if run_dir is not None else cfg_dict["paths"]["output_dir"])
    trainer_cfg = cfg_dict["trainer"]
    loop = str(trainer_cfg.get("loop", "trainer"))
    if loop not in LOOPS:
        raise TrainingConfigError(f"trainer.loop must be one of {LOOPS}, got {loop!r}")
    resume = bool(cfg_dict.get("resume", False))

    checkpoint = None
    if resume:
        if loop == "lean":
            raise TrainingConfigError("resume=true needs Trainer checkpoints; the lean loop "
                                      "(trainer.loop=lean) keeps none. Use trainer=gpu to resume")
        checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        if checkpoint is None:
            raise TrainingConfigError(
                f"resume=true but no complete checkpoint under {run_dir / 'checkpoints'}; "
                "set paths.output_dir to the run directory to resume")
        logger.info("resuming from %s", checkpoint)

    seed = int(cfg_dict.get("seed", 42))
    set_seed(seed)
    threads = configure_threads(trainer_cfg)
    inputs = load_inputs(cfg_dict, run_dir)
    if loop == "lean":
        from .gpu_training import train_lean

        return train_lean(inputs, started=started, report=report)
    return _train_with_trainer(inputs, checkpoint, started, threads, report)


def _train_with_trainer(inputs: RunInputs, checkpoint: Path | None, started: float,
                        threads: int, report: ReportFn | None) -> dict[str, Any]:
    import torch
    from transformers import EarlyStoppingCallback

    trainer_cfg, tasks, run_dir = inputs.trainer_cfg, inputs.tasks, inputs.run_dir
    args = training_arguments(trainer_cfg, run_dir, tasks, inputs.seed)
    clock = _run_clock(started, args.metric_for_best_model, report)
    callbacks = [clock]
    patience = trainer_cfg.get("early_stopping_patience")
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
    if args.process_index == 0:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(str(run_dir / "tensorboard"))))

    head_lr = head_learning_rate(trainer_cfg)
    trainer = _trainer_class()(
        model=inputs.model,
        args=args,
        train_dataset=inputs.datasets["train"],
        eval_dataset=inputs.datasets["validation"],
        data_collator=MultiTaskCollator(inputs.tokenizer, tasks),
        processing_class=inputs.tokenizer,
        compute_metrics=metrics_fn(tasks),
        callbacks=callbacks,
        head_learning_rate=head_lr,
    )
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trained_s = time.time() - started
    # Calibrate and score in fp32, as the saved model runs when loaded: drop the
    # mixed-precision wrapper that accelerate put around forward for training.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)

    def predict(split: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        out = trainer.predict(inputs.datasets[split], metric_key_prefix=split)
        return _as_tuple(out.predictions), _as_tuple(out.label_ids)

    state = trainer.state
    epochs_here = (state.epoch or 0.0) - clock.start_epoch  # epochs trained by this process
    trained_items = len(inputs.datasets["train"]) * epochs_here
    trained_tokens = sum(inputs.datasets["train"]["length"]) * epochs_here
    step_time = max(clock.step_time_s, 1e-9)
    training = {
        "loop": "trainer",
        "best_checkpoint": os.path.basename(state.best_model_checkpoint or "") or None,
        "best_metric": state.best_metric,
        "epochs_run": state.epoch,
        "global_steps": state.global_step,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
        "train_loss": train_output.metrics.get("train_loss"),
        # Optimizer steps only (forward, backward, update): no evaluation, saving or loading.
        "step_time_s": clock.step_time_s,
        "step_samples_per_second": trained_items / step_time,
        "step_tokens_per_second": trained_tokens / step_time,
        "first_step_s": clock.first_step_s,
        "time_to_best_s": clock.time_to_best_s,
        "training_end_s": trained_s,
        "world_size": args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "num_threads": threads,
    }
    summary = finish_run(inputs, predict, training, started, is_main=trainer.is_world_process_zero())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
