"""Fine-tuning with the Hugging Face Trainer: from a composed config to a run directory.

A run directory holds:
  model/          the best model (save_pretrained, safetensors) with its tokenizer; loads alone
  metrics.json    per split and per task, at the calibrated decisions and at the defaults
  config.yaml     the resolved config that produced the run
  checkpoints/    Trainer checkpoints (training state for ``resume=true``; never shipped)
  tensorboard/    training curves
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
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


# --------------------------------------------------------------------------- training


def training_arguments(trainer_cfg: Mapping[str, Any], run_dir: Path, tasks: TaskSet, seed: int):
    from transformers import TrainingArguments

    t = trainer_cfg
    precision = str(t.get("precision", "fp32"))
    if precision not in ("fp32", "bf16", "fp16"):
        raise TrainingConfigError(f"trainer.precision must be fp32, bf16 or fp16, got {precision!r}")
    device = str(t.get("device", "cpu"))
    if device not in ("cpu", "cuda", "auto"):
        raise TrainingConfigError(f"trainer.device must be cpu, cuda or auto, got {device!r}")
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
    for task, task_logits, task_targets in zip(tasks, logits, targets):
        temperature = fit_temperature(task, task_logits, task_targets)
        task.temperature = temperature
        entry: dict[str, Any] = {"temperature": temperature}
        if task.is_multi_label:
            probs = probabilities(task, task_logits)
            thresholds, how = tune_thresholds(probs, task_targets, min_positives=min_positives)
            task.thresholds = thresholds
            entry["thresholds"] = dict(zip(task.labels, thresholds))
            entry["threshold_source"] = dict(zip(task.labels, how))
        report[task.name] = entry
    return report


def _set_threads(trainer_cfg: Mapping[str, Any]) -> None:
    import torch

    n = trainer_cfg.get("num_threads")
    if n:
        torch.set_num_threads(int(n))


def train(cfg: Any, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, calibrate, evaluate and save one run. Returns the metrics written."""
    import torch
    from transformers import EarlyStoppingCallback, Trainer, set_seed

    started = time.time()
    cfg_dict = _container(cfg)
    run_dir = Path(run_dir if run_dir is not None else cfg_dict["paths"]["output_dir"])
    data_cfg, model_cfg, trainer_cfg = cfg_dict["data"], cfg_dict["model"], cfg_dict["trainer"]
    seed = int(cfg_dict.get("seed", 42))
    resume = bool(cfg_dict.get("resume", False))

    checkpoint = None
    if resume:
        checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        if checkpoint is None:
            raise TrainingConfigError(
                f"resume=true but no complete checkpoint under {run_dir / 'checkpoints'}; "
                "set paths.output_dir to the run directory to resume")
        logger.info("resuming from %s", checkpoint)

    set_seed(seed)
    _set_threads(trainer_cfg)
    eval_splits = list(cfg_dict.get("eval_splits") or [])
    wanted = ["train", "validation"] + [s for s in eval_splits if s not in ("train", "validation")]
    raw_tasks = cfg_dict["task"]["tasks"]
    splits = load_splits(data_cfg, TaskSet.from_config(raw_tasks), splits=wanted)
    tasks = prepare_tasks(raw_tasks, splits["train"])

    tokenizer = load_tokenizer(model_cfg)
    model = build_model(model_cfg, tasks, int(data_cfg.get("max_length", 256)))
    datasets = {name: build_dataset(records, tokenizer, tasks, data_cfg)
                for name, records in splits.items()}
    args = training_arguments(trainer_cfg, run_dir, tasks, seed)
    callbacks = []
    patience = trainer_cfg.get("early_stopping_patience")
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
    if args.process_index == 0:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(str(run_dir / "tensorboard"))))

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=MultiTaskCollator(tokenizer, tasks),
        processing_class=tokenizer,
        compute_metrics=metrics_fn(tasks),
        callbacks=callbacks,
    )
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    def predict(split: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        out = trainer.predict(datasets[split], metric_key_prefix=split)
        return _as_tuple(out.predictions), _as_tuple(out.label_ids)

    # Decisions at the defaults (T=1, thresholds 0.5), then calibrated on validation.
    predictions = {split: predict(split) for split in ["validation"] + [
        s for s in eval_splits if s != "validation"]}
    default_metrics = {s: compute_metrics(tasks, *predictions[s], detailed=True) for s in predictions}
    calibration = None
    if cfg_dict.get("calibrate", True):
        calibration = calibrate(tasks, *predictions["validation"])
        model.config.tasks = tasks.to_list()
    final_metrics = {s: compute_metrics(tasks, *predictions[s], detailed=True) for s in predictions
                     if s in eval_splits}

    state = trainer.state
    summary = {
        "headline": HEADLINE,
        **{s: final_metrics[s] for s in final_metrics},
        "at_default_decisions": {s: default_metrics[s] for s in eval_splits if s in default_metrics},
        "calibration": calibration,
        "training": {
            "best_checkpoint": os.path.basename(state.best_model_checkpoint or "") or None,
            "best_metric": state.best_metric,
            "epochs_run": state.epoch,
            "global_steps": state.global_step,
            "train_runtime_s": train_output.metrics.get("train_runtime"),
            "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
            "train_loss": train_output.metrics.get("train_loss"),
            "wall_time_s": time.time() - started,
            "world_size": args.world_size,
            "n_items": {s: len(r) for s, r in splits.items()},
        },
    }
    if trainer.is_world_process_zero():
        with atomic.directory(run_dir / "model") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        from omegaconf import OmegaConf

        atomic.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg_dict)))
        atomic.write_json(run_dir / "metrics.json", _finite(summary))
        logger.info("run written to %s", run_dir)
        for split in eval_splits:
            if split in final_metrics:
                m = final_metrics[split]
                line = ", ".join(f"{t} macro-F1 {m[t]['macro_f1']:.3f}" for t in tasks.names)
                print(f"[{split}] {HEADLINE} {m[HEADLINE]:.3f} ({line})", flush=True)
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
