"""The Hugging Face Trainer loop: checkpoints, resume, DDP under torchrun.

Reads its inputs with :func:`scrclf.training.run.load_inputs` and ends with
:func:`scrclf.training.run.finish_run`, like the hand-written loop
(:mod:`scrclf.training.hand_loop`), so both write the same run directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from scrclf import atomic
from scrclf.data.records import MultiTaskCollator
from scrclf.settings import TrainerSettings
from scrclf.tasks import TaskSet
from scrclf.training.run import (
    RUN_CONFIG_FILE,
    ReportFn,
    RunInputs,
    TrainingConfigError,
    _as_tuple,
    finish_run,
    metrics_fn,
    resolve_precision,
)


def training_arguments(
    t: TrainerSettings, run_dir: Path, tasks: TaskSet, seed: int, select_best: bool = True
):
    """The Trainer's arguments. ``select_best``: evaluate on validation after each epoch and
    load the best checkpoint at the end; without it (a refit) nothing is evaluated during
    training and the last weights are kept."""
    from transformers import TrainingArguments

    precision = resolve_precision(t.precision, t.device)
    if t.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainingConfigError(
                "trainer.device=cuda but no CUDA GPU is visible; use trainer=cpu"
            )
    metric = t.metric_for_best
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=float(t.max_epochs),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler,
        gradient_accumulation_steps=t.grad_accum_steps,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=t.device == "cpu",
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        eval_strategy="epoch" if select_best else "no",
        # The first epoch evaluated (trainer.eval_last_epochs); every epoch is checkpointed.
        eval_delay=float(t.first_evaluated_epoch) if select_best else 0,
        save_strategy="epoch",
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=select_best,
        metric_for_best_model=metric if select_best else None,
        greater_is_better=not metric.endswith("loss") if select_best else None,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to="none",
        label_names=tasks.names,
        remove_unused_columns=False,
        # The loss is a per-process mean; without this the logged loss under DDP is
        # multiplied by the world size.
        average_tokens_across_devices=False,
        dataloader_num_workers=t.dataloader_workers,
        seed=int(seed),
        data_seed=int(seed),
        disable_tqdm=False,
        save_only_model=False,
        ddp_find_unused_parameters=False,
    )


def _trainer_class():
    """The Trainer with sequential evaluation and an optional learning rate for the heads."""
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class ScrClfTrainer(Trainer):
        def __init__(
            self,
            *args,
            head_learning_rate: float | None = None,
            layer_lr_decay: float | None = None,
            **kwargs,
        ):
            self.head_learning_rate = head_learning_rate
            self.layer_lr_decay = layer_lr_decay
            super().__init__(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            # The Trainer checks each step's loss for NaN anyway (logging_nan_inf_filter), so
            # this adds no synchronisation; without it a diverged run trains on NaN weights.
            if not bool(torch.isfinite(loss).all()):
                step = self.state.global_step + 1
                raise TrainingConfigError(
                    f"loss became NaN at step {step}: the run diverged; lower "
                    f"trainer.learning_rate (now {self.args.learning_rate:g}) or set "
                    f"trainer.max_grad_norm (now {self.args.max_grad_norm:g})"
                )
            return loss

        def evaluate(self, *args, **kwargs):
            # Each data loader draws its base seed from the global RNG: without a fork, the
            # evaluations between epochs would change the next epochs' dropout masks, so how
            # often a run evaluates (trainer.eval_last_epochs) would change what it learns.
            with torch.random.fork_rng(devices=[]):
                return super().evaluate(*args, **kwargs)

        def _get_eval_sampler(self, eval_dataset):
            # Evaluation splits are sorted by length (load_inputs): reading them in order
            # keeps padding minimal, where the length-grouped sampler would shuffle them.
            if self.args.world_size <= 1 and eval_dataset is not None:
                return SequentialSampler(eval_dataset)
            return super()._get_eval_sampler(eval_dataset)

        def create_optimizer(self, model=None):
            if self.optimizer is not None:
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            # The model owns its parameter groups: one weight-decay rule for every loop.
            param_groups = opt_model.param_groups(
                self.args.learning_rate,
                self.args.weight_decay,
                self.head_learning_rate,
                self.layer_lr_decay,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(
                self.args, opt_model
            )
            optimizer_kwargs.pop("params", None)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
            return self.optimizer

    return ScrClfTrainer


def _run_clock(started: float, metric: str, report: ReportFn | None, run_config: Any = None):
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
            if run_config is not None and state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    atomic.write_json(folder / RUN_CONFIG_FILE, run_config)
            best = state.best_model_checkpoint or ""
            # Without checkpoint selection (a refit) the last checkpoint is the one kept.
            if best.endswith(f"checkpoint-{state.global_step}") or not args.load_best_model_at_end:
                self.time_to_best_s = time.time() - started

    return RunClock()


def train_with_trainer(
    inputs: RunInputs,
    checkpoint: Path | None,
    started: float,
    threads: int,
    report: ReportFn | None,
) -> dict[str, Any]:
    import torch
    from transformers import EarlyStoppingCallback

    settings, tasks, run_dir = inputs.trainer, inputs.tasks, inputs.run_dir
    select_best = inputs.refit is None
    args = training_arguments(settings, run_dir, tasks, inputs.seed, select_best=select_best)
    clock = _run_clock(started, settings.metric_for_best, report, inputs.cfg)
    callbacks = [clock]
    patience = settings.early_stopping_patience
    if patience and select_best:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=int(patience)))
    if args.process_index == 0:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(str(run_dir / "tensorboard"))))

    head_lr = settings.head_learning_rate
    trainer = _trainer_class()(
        model=inputs.model,
        args=args,
        train_dataset=inputs.datasets["train"],
        eval_dataset=inputs.datasets["validation"] if select_best else None,
        data_collator=MultiTaskCollator(inputs.tokenizer, tasks),
        processing_class=inputs.tokenizer,
        compute_metrics=metrics_fn(tasks),
        callbacks=callbacks,
        head_learning_rate=head_lr,
        layer_lr_decay=settings.layer_lr_decay,
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
    summary = finish_run(
        inputs, predict, training, started, is_main=trainer.is_world_process_zero()
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary
