"""A lean training loop for large corpora on one GPU (``trainer=gpu_fast``).

The Hugging Face Trainer spends much of a GPU step in Python when the model is small: a
MiniLM-sized encoder at batch 32 keeps an H100 mostly idle. This loop removes that
overhead:

* **length buckets, not shuffled items**: every epoch the items are sorted by length
  (by shape bucket, ties in random order), cut into batches, and the *batches* are
  shuffled. Batches carry little padding and the order still changes every epoch;
* **bf16 autocast** on CUDA, fp32 master weights, and fused AdamW;
* **the learning rate scaled with the batch size** (see :func:`scaled_learning_rate`),
  with linear warmup then linear (or cosine) decay;
* optional ``torch.compile`` with ``dynamic=False`` on a few static shapes: batches are
  padded up to one of ``compile_buckets`` lengths, so at most that many graphs are
  compiled; the one short batch of an epoch runs eagerly. Optional CUDA graphs
  (``cuda_graphs=true``, compile mode ``reduce-overhead``), off by default;
* no host synchronisation inside an epoch except every ``logging_steps`` steps.

It keeps no checkpoints (the best weights are held in memory), runs on one process and
ends with :func:`scrclf.training.run.finish_run`, so the run directory has the same
``model/``, ``metrics.json`` and ``config.yaml`` as a Trainer run. On a CPU it runs in
fp32 without compilation, which is how the tests exercise it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from scrclf.evaluation.metrics import HEADLINE, compute_metrics, flatten
from scrclf.settings import TrainerSettings
from scrclf.tasks import BESIDE_TARGET_PREFIXES, TaskSet
from scrclf.training.run import (
    ReportFn,
    RunInputs,
    TrainingConfigError,
    finish_run,
)

if TYPE_CHECKING:
    from scrclf.modeling.model import ScrClfModel

logger = logging.getLogger(__name__)

LR_SCALING = ("none", "linear", "sqrt")
SCHEDULES = ("linear", "cosine", "constant")
PAD_MULTIPLE = 8


# ------------------------------------------------------------------------ settings


def scaled_learning_rate(
    base: float, batch_size: int, reference_batch_size: int, rule: str
) -> float:
    """The learning rate for ``batch_size``, given one tuned at ``reference_batch_size``.

    ``linear``: ``base * b / b_ref`` (the rule of Goyal et al. for SGD; aggressive for Adam),
    ``sqrt``: ``base * sqrt(b / b_ref)`` (keeps the variance of an Adam update about
    constant; the default), ``none``: ``base``.
    """
    if rule not in LR_SCALING:
        raise TrainingConfigError(f"trainer.lr_scaling must be one of {LR_SCALING}, got {rule!r}")
    ratio = batch_size / float(reference_batch_size)
    if rule == "linear":
        return base * ratio
    if rule == "sqrt":
        return base * math.sqrt(ratio)
    return base


def choose_buckets(
    lengths: Sequence[int] | np.ndarray, n: int, multiple: int = PAD_MULTIPLE
) -> list[int]:
    """``n`` static sequence lengths at the quantiles of ``lengths``, rounded up to ``multiple``.

    The last bucket holds the longest item, so every batch fits one bucket.
    """
    lengths = np.asarray(lengths)
    qs = np.quantile(lengths, np.arange(1, n + 1) / n)
    buckets = {int(math.ceil(q / multiple) * multiple) for q in qs}
    buckets.add(int(math.ceil(lengths.max() / multiple) * multiple))
    return sorted(buckets)


@dataclass
class LeanSettings:
    """The lean loop's settings, read from the ``trainer`` config group."""

    device: str
    batch_size: int
    eval_batch_size: int
    base_learning_rate: float
    learning_rate: float
    head_learning_rate: float | None
    layer_lr_decay: float | None
    lr_scaling: str
    lr_reference_batch_size: int
    warmup_ratio: float
    lr_scheduler: str
    weight_decay: float
    max_grad_norm: float
    max_epochs: int
    early_stopping_patience: int | None
    first_evaluated_epoch: int
    precision: str
    fused_optimizer: bool
    compile: bool
    compile_buckets: Any
    cuda_graphs: bool
    metric: str
    logging_steps: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, t: TrainerSettings | Mapping[str, Any]) -> LeanSettings:
        if not isinstance(t, TrainerSettings):
            t = TrainerSettings.from_config(t)
        notes: list[str] = []
        device = t.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingConfigError(
                "trainer.device=cuda but no CUDA GPU is visible; "
                "set trainer.device=cpu to run the lean loop on the CPU"
            )
        precision = t.precision
        if precision not in ("fp32", "bf16", "auto"):
            raise TrainingConfigError(
                f"the lean loop supports trainer.precision fp32, bf16 or auto, got {precision!r}"
            )
        if precision == "auto":
            precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        compile_, cuda_graphs = t.compile, t.cuda_graphs
        if cuda_graphs and not compile_:
            raise TrainingConfigError(
                "trainer.cuda_graphs=true needs trainer.compile=true "
                "(CUDA graphs are captured by torch.compile)"
            )
        if device == "cpu":
            if precision != "fp32":
                notes.append(f"precision {precision} -> fp32 on CPU")
            if compile_:
                notes.append("compile off on CPU")
            precision, compile_, cuda_graphs = "fp32", False, False
        batch, base_lr, rule = t.batch_size, t.learning_rate, t.lr_scaling
        ref = t.lr_reference_batch_size or batch
        head_lr = t.head_learning_rate
        if t.lr_scheduler not in SCHEDULES:
            raise TrainingConfigError(
                f"the lean loop supports trainer.lr_scheduler in {SCHEDULES}, "
                f"got {t.lr_scheduler!r}"
            )
        return cls(
            device=device,
            batch_size=batch,
            eval_batch_size=t.eval_batch_size,
            base_learning_rate=base_lr,
            learning_rate=scaled_learning_rate(base_lr, batch, ref, rule),
            head_learning_rate=(
                scaled_learning_rate(head_lr, batch, ref, rule) if head_lr else None
            ),
            layer_lr_decay=t.layer_lr_decay,
            lr_scaling=rule,
            lr_reference_batch_size=ref,
            warmup_ratio=t.warmup_ratio,
            lr_scheduler=t.lr_scheduler,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            max_epochs=t.max_epochs,
            early_stopping_patience=t.early_stopping_patience,
            first_evaluated_epoch=t.first_evaluated_epoch,
            precision=precision,
            fused_optimizer=t.optim.endswith("_fused"),
            compile=compile_,
            compile_buckets=t.compile_buckets,
            cuda_graphs=cuda_graphs,
            metric=t.metric_for_best,
            logging_steps=t.logging_steps,
            notes=notes,
        )


# --------------------------------------------------------------------------- batches


class TokenStore:
    """One split's token ids in flat arrays (with offsets and lengths) and its targets.

    :meth:`collate` pads any set of items to a given length with NumPy indexing, fast
    enough to feed tens of thousands of items per second from one Python thread.
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        token_type_ids: Sequence[Sequence[int]] | None,
        targets: Mapping[str, np.ndarray],
        pad_id: int = 0,
    ):
        self.lengths = np.fromiter(
            (len(x) for x in input_ids), dtype=np.int64, count=len(input_ids)
        )
        self.offsets = np.zeros(len(self.lengths), dtype=np.int64)
        if len(self.lengths) > 1:
            self.offsets[1:] = np.cumsum(self.lengths)[:-1]
        total = int(self.lengths.sum())
        self.ids = np.fromiter((t for x in input_ids for t in x), dtype=np.int64, count=total)
        self.types = None
        if token_type_ids is not None:
            self.types = np.fromiter(
                (t for x in token_type_ids for t in x), dtype=np.int64, count=total
            )
        self.targets = {name: np.asarray(v) for name, v in targets.items()}
        self.pad_id = int(pad_id)

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_dataset(cls, dataset, tasks: TaskSet, pad_id: int = 0) -> TokenStore:
        """From a dataset built by :func:`scrclf.data.records.build_dataset`."""
        columns = dataset.column_names
        targets = {}
        for task in tasks:
            if task.name in columns:
                dtype = np.float32 if task.is_multi_label else np.int64
                targets[task.name] = np.asarray(dataset[task.name], dtype=dtype)
            # A teacher's logits (scrclf.training.distill) and out-of-fold wide logits
            # (model.wide.residual).
            for extra in (prefix + task.name for prefix in BESIDE_TARGET_PREFIXES):
                if extra in columns:
                    targets[extra] = np.asarray(dataset[extra], dtype=np.float32)
        types = dataset["token_type_ids"] if "token_type_ids" in columns else None
        return cls(dataset["input_ids"], types, targets, pad_id)

    def collate(self, index: np.ndarray, pad_to: int) -> dict[str, torch.Tensor]:
        """Token inputs padded to ``pad_to`` and the targets of the items ``index``."""
        index = np.asarray(index)
        lengths = self.lengths[index]
        positions = np.arange(pad_to)[None, :]
        mask = positions < lengths[:, None]
        flat = np.where(mask, self.offsets[index][:, None] + positions, 0)
        batch = {
            "input_ids": torch.from_numpy(np.where(mask, self.ids[flat], self.pad_id)),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }
        if self.types is not None:
            batch["token_type_ids"] = torch.from_numpy(np.where(mask, self.types[flat], 0))
        for name, values in self.targets.items():
            batch[name] = torch.from_numpy(values[index])
        return batch


def pad_length(longest: int, buckets: Sequence[int] | None, multiple: int = PAD_MULTIPLE) -> int:
    """The length a batch is padded to: the smallest bucket that holds it, else a multiple."""
    if buckets:
        for b in buckets:
            if b >= longest:
                return int(b)
    return int(math.ceil(longest / multiple) * multiple)


def length_bucketed_batches(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    buckets: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """One epoch of batches: items sorted by length, cut into batches, batches shuffled.

    With ``buckets``, items are sorted by bucket only and shuffled within it (padding is
    to the bucket length anyway, so the extra randomness is free); without, by length with
    ties in random order. Every item appears exactly once; only the last batch of the
    sorted order may be short.
    """
    lengths = np.asarray(lengths)
    noise = rng.random(len(lengths))
    if buckets:
        key = np.searchsorted(np.asarray(buckets), lengths, side="left").astype(np.float64)
    else:
        key = lengths.astype(np.float64)
    order = np.lexsort((noise, key))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# ---------------------------------------------------------------------------- training


def _lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


@dataclass
class EpochStats:
    items: int = 0
    steps: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    loss_sum: float = 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.steps)


class LeanTrainer:
    """Optimizer, schedule, precision and (optionally) compiled forward for one model."""

    def __init__(
        self,
        model: torch.nn.Module,
        settings: LeanSettings,
        total_steps: int,
        buckets: Sequence[int] | None = None,
    ):
        self.settings = settings
        self.device = torch.device(settings.device)
        self.model = model.to(self.device)
        self.buckets = list(buckets) if buckets else None
        self.total_steps = max(1, int(total_steps))
        kwargs: dict[str, Any] = {"fused": True} if settings.fused_optimizer else {}
        self.optimizer = torch.optim.AdamW(
            cast("ScrClfModel", self.model).param_groups(
                settings.learning_rate,
                settings.weight_decay,
                settings.head_learning_rate,
                settings.layer_lr_decay,
            ),
            lr=settings.learning_rate,
            **kwargs,
        )
        warmup = int(math.ceil(settings.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.total_steps, warmup, settings.lr_scheduler)
        )
        self.amp_dtype = torch.bfloat16 if settings.precision == "bf16" else None
        self.forward = self.model
        if settings.compile:
            self.forward = self._compiled()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.step_count = 0
        self.first_step_done: float | None = None  # time.time() after the first step

    def _compiled(self):
        import torch._dynamo

        config = torch._dynamo.config
        limit = len(self.buckets or []) + 4
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name) and getattr(config, name) < limit:
                setattr(config, name, limit)
        mode = "reduce-overhead" if self.settings.cuda_graphs else None
        return torch.compile(self.model, dynamic=False, mode=mode)

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type != "cuda":
            return dict(batch)
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def train_step(
        self, batch: Mapping[str, torch.Tensor], static_shape: bool = True
    ) -> torch.Tensor:
        """One optimizer step; returns the detached loss (no host synchronisation)."""
        forward = self.forward if static_shape else self.model
        if self.settings.cuda_graphs and static_shape:
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            loss = forward(**batch).loss
        loss.backward()
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        if self.first_step_done is None:
            self.first_step_done = time.time()
        return loss.detach().float().clone()

    def batches(
        self, store: TokenStore, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, int, bool]]:
        """(item indices, padded length, static shape?) for one epoch."""
        for index in length_bucketed_batches(
            store.lengths, self.settings.batch_size, rng, self.buckets
        ):
            pad_to = pad_length(int(store.lengths[index].max()), self.buckets)
            yield index, pad_to, len(index) == self.settings.batch_size

    def train_epoch(
        self, store: TokenStore, rng: np.random.Generator, writer=None, max_steps: int | None = None
    ) -> EpochStats:
        self.model.train()
        stats = EpochStats()
        running = torch.zeros((), device=self.device)
        logged = torch.zeros((), device=self.device)
        since_log = 0
        start = time.perf_counter()
        for index, pad_to, static in self.batches(store, rng):
            if max_steps is not None and stats.steps >= max_steps:
                break
            loss = self.train_step(self.to_device(store.collate(index, pad_to)), static)
            running += loss
            logged += loss
            since_log += 1
            stats.steps += 1
            stats.items += len(index)
            stats.tokens += int(store.lengths[index].sum())
            stats.padded_tokens += len(index) * pad_to
            if since_log >= self.settings.logging_steps and writer is not None:
                writer.add_scalar("train/loss", logged.item() / since_log, self.step_count)
                writer.add_scalar(
                    "train/learning_rate", self.scheduler.get_last_lr()[0], self.step_count
                )
                logged.zero_()
                since_log = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        stats.seconds = time.perf_counter() - start
        stats.loss_sum = float(running.item())
        return stats

    @torch.inference_mode()
    def predict(
        self, store: TokenStore, tasks: TaskSet
    ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Logits and targets per task, in the store's item order."""
        self.model.eval()
        order = np.argsort(store.lengths, kind="stable")
        chunks: list[list[np.ndarray]] = [[] for _ in tasks.names]
        size = self.settings.eval_batch_size
        for i in range(0, len(order), size):
            index = order[i : i + size]
            batch = store.collate(index, pad_length(int(store.lengths[index].max()), None))
            inputs = {
                k: v
                for k, v in self.to_device(batch).items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            with self._autocast():
                logits = self.model(**inputs).logits
            for j, task_logits in enumerate(logits):
                chunks[j].append(task_logits.float().cpu().numpy())
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        logits_out = tuple(np.concatenate(c)[inverse] for c in chunks)
        targets = tuple(store.targets[name] for name in tasks.names if name in store.targets)
        return logits_out, targets


# --------------------------------------------------------------------------- the run


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train_lean(
    inputs: RunInputs, started: float | None = None, report: ReportFn | None = None
) -> dict[str, Any]:
    """Train with the lean loop, then evaluate, calibrate and save like the Trainer path."""
    started = time.time() if started is None else started
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainingConfigError(
            "the lean loop (trainer=gpu_fast) runs on one process; "
            "for several GPUs use trainer=gpu under torchrun"
        )
    settings = LeanSettings.from_config(inputs.trainer)
    for note in settings.notes:
        logger.info("lean loop: %s", note)
    tasks = inputs.tasks
    pad_id = inputs.tokenizer.pad_token_id or 0
    stores = {
        name: TokenStore.from_dataset(ds, tasks, pad_id) for name, ds in inputs.datasets.items()
    }
    train_store = stores["train"]
    buckets = None
    if settings.compile:
        spec = settings.compile_buckets
        buckets = (
            choose_buckets(train_store.lengths, int(spec))
            if isinstance(spec, int)
            else sorted(int(b) for b in spec)
        )
        logger.info("lean loop: static shape buckets %s", buckets)
    steps_per_epoch = math.ceil(len(train_store) / settings.batch_size)
    trainer = LeanTrainer(inputs.model, settings, steps_per_epoch * settings.max_epochs, buckets)
    writer = _tensorboard(inputs.run_dir)
    rng = np.random.default_rng(inputs.seed)
    key = (
        settings.metric[len("eval_") :] if settings.metric.startswith("eval_") else settings.metric
    )
    higher_is_better = not key.endswith("loss")

    best: dict[str, Any] = {"epoch": None, "value": None, "state": None, "time_s": None}
    totals = EpochStats()
    stale = 0
    epochs_run = 0
    for epoch in range(1, settings.max_epochs + 1):
        stats = trainer.train_epoch(train_store, rng, writer)
        epochs_run = epoch
        for name in ("items", "steps", "tokens", "padded_tokens", "seconds", "loss_sum"):
            setattr(totals, name, getattr(totals, name) + getattr(stats, name))
        if inputs.refit is not None:
            # A refit trains on validation too: nothing is held out, the last epoch is kept.
            logger.info("epoch %d: loss %.4f", epoch, stats.mean_loss)
            best.update(epoch=epoch, time_s=time.time() - started, state=None)
            continue
        if epoch < settings.first_evaluated_epoch:  # trainer.eval_last_epochs
            logger.info("epoch %d: loss %.4f (not evaluated)", epoch, stats.mean_loss)
            continue
        logits, targets = trainer.predict(stores["validation"], tasks)
        flat = flatten(compute_metrics(tasks, logits, targets))
        if key not in flat:
            raise TrainingConfigError(
                f"trainer.metric_for_best={settings.metric!r} is not a "
                f"validation metric; e.g. {HEADLINE}"
            )
        value = flat[key]
        logger.info(
            "epoch %d: loss %.4f, validation %s %.4f, %.0f samples/s",
            epoch,
            stats.mean_loss,
            key,
            value,
            stats.items / max(stats.seconds, 1e-9),
        )
        if writer is not None:
            writer.add_scalar(f"eval/{key}", value, trainer.step_count)
            writer.add_scalar(
                "train/samples_per_second",
                stats.items / max(stats.seconds, 1e-9),
                trainer.step_count,
            )
        improved = best["value"] is None or (
            value > best["value"] if higher_is_better else value < best["value"]
        )
        if improved:
            best.update(
                epoch=epoch,
                value=value,
                time_s=time.time() - started,
                state={
                    k: v.detach().to("cpu", copy=True)
                    for k, v in trainer.model.state_dict().items()
                },
            )
            stale = 0
        else:
            stale += 1
        if report is not None:
            report(epoch, value)
        if settings.early_stopping_patience and stale >= settings.early_stopping_patience:
            logger.info("early stopping after epoch %d (best epoch %d)", epoch, best["epoch"])
            break
    if writer is not None:
        writer.close()
    if best["state"] is not None:
        trainer.model.load_state_dict(best["state"])
    trained_s = time.time() - started

    seconds = max(totals.seconds, 1e-9)
    training = {
        "loop": "lean",
        "best_checkpoint": None,
        "best_epoch": best["epoch"],
        "best_metric": best["value"],
        "epochs_run": epochs_run,
        "global_steps": totals.steps,
        "train_runtime_s": totals.seconds,
        "train_samples_per_second": totals.items / seconds,
        "train_tokens_per_second": totals.tokens / seconds,
        "padding_fraction": 1.0 - totals.tokens / max(1, totals.padded_tokens),
        "train_loss": totals.mean_loss,
        "first_step_s": (trainer.first_step_done - started) if trainer.first_step_done else None,
        "time_to_best_s": best["time_s"],
        "training_end_s": trained_s,
        "world_size": 1,
        "device": settings.device,
        "precision": settings.precision,
        "compile": settings.compile,
        "buckets": buckets,
        "learning_rate": settings.learning_rate,
        "lr_scaling": settings.lr_scaling,
        "num_threads": torch.get_num_threads(),
    }
    return finish_run(
        inputs, lambda split: trainer.predict(stores[split], tasks), training, started
    )
