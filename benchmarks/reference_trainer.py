"""The reference fine-tune: one plain Hugging Face Trainer run per task, as tutorials write it.

The pattern is the one of the Hugging Face text-classification guide, with the Trainer's
defaults left alone:

* ``tokenizer(text, finding, truncation=True)`` (the same text pair scrclf reads), no length
  column, **dynamic padding** with ``DataCollatorWithPadding``;
* ``AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=...)``: the BERT
  [CLS] pooler head; ``problem_type="multi_label_classification"`` (BCE) for ``themes``,
  single-label cross-entropy for ``evidence`` and ``action_strength``; no class weights;
* ``TrainingArguments`` defaults: 3 epochs, learning rate 5e-5, batch 8, AdamW, linear decay
  without warmup, no weight decay, random sampling; evaluation and a checkpoint every
  epoch, the best epoch by validation macro-F1 loaded at the end;
* decisions as users write them: argmax (single-label), ``sigmoid >= 0.5`` (multi-label).

Three tasks need three fine-tunes: the reference's cost is their sum and its quality is each
model's test macro-F1. Used by ``benchmarks/train_speed.py``; runnable alone::

    python benchmarks/reference_trainer.py --data data/scr_recs --out /tmp/reference
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Trainer defaults (transformers 5.x), written out so that the reference is explicit.
EPOCHS = 3
LEARNING_RATE = 5e-5
BATCH_SIZE = 8


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plain_macro_f1(
    multi_label: bool, logits: np.ndarray, targets: np.ndarray, num_labels: int
) -> float:
    """Macro-F1 at the decisions a plain fine-tune makes (argmax, or sigmoid >= 0.5)."""
    from sklearn.metrics import f1_score

    if multi_label:
        pred = (1.0 / (1.0 + np.exp(-logits)) >= 0.5).astype(np.int64)
        return float(f1_score(targets.astype(np.int64), pred, average="macro", zero_division=0))
    return float(
        f1_score(
            targets,
            logits.argmax(-1),
            labels=list(range(num_labels)),
            average="macro",
            zero_division=0,
        )
    )


def _step_timer():
    """A callback summing the time spent in optimizer steps and timing the best checkpoint."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.started = time.time()
            self.step_s = 0.0
            self._t0 = None
            self.time_to_best_s = None
            self.first_step_s = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                self.step_s += time.perf_counter() - self._t0
            if self.first_step_s is None:
                self.first_step_s = time.time() - self.started

        def on_save(self, args, state, control, **kwargs):
            if (state.best_model_checkpoint or "").endswith(f"checkpoint-{state.global_step}"):
                self.time_to_best_s = time.time() - self.started

    return StepTimer()


def fine_tune_task(
    task: Mapping[str, Any],
    splits: Mapping[str, list[dict[str, Any]]],
    encoder_path: str,
    out_dir: Path,
    seed: int = 42,
    text_column: str = "text",
    pair_column: str = "finding",
) -> dict[str, Any]:
    """Fine-tune one model for one task (``{name, type, labels, column}``); report cost and F1."""
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    timer = _step_timer()
    name, labels = task["name"], list(task["labels"])
    column = task.get("column") or name
    multi = task["type"] == "multi_label"
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(encoder_path)

    def encode(rows: Sequence[dict[str, Any]]) -> datasets.Dataset:
        texts = [r[text_column] for r in rows]
        pairs = [r.get(pair_column) for r in rows]
        enc = tokenizer(
            [t if not p else (t, p) for t, p in zip(texts, pairs, strict=True)], truncation=True
        )
        columns = dict(enc)
        if multi:
            columns["labels"] = [
                [1.0 if label in r[column] else 0.0 for label in labels] for r in rows
            ]
        else:
            columns["labels"] = [label2id[r[column]] for r in rows]
        return datasets.Dataset.from_dict(columns)

    data = {split: encode(rows) for split, rows in splits.items()}
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        problem_type="multi_label_classification" if multi else "single_label_classification",
    )

    def metrics(eval_pred) -> dict[str, float]:
        return {
            "macro_f1": plain_macro_f1(
                multi,
                np.asarray(eval_pred.predictions),
                np.asarray(eval_pred.label_ids),
                len(labels),
            )
        }

    args = TrainingArguments(
        output_dir=str(out_dir / name),
        num_train_epochs=EPOCHS,
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=BATCH_SIZE,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        save_total_limit=1,
        report_to="none",
        seed=seed,
        use_cpu=not _cuda(),
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
        callbacks=[timer],
    )
    output = trainer.train()
    train_end = time.time() - timer.started
    test = trainer.predict(data["test"])
    test_logits, test_targets = np.asarray(test.predictions), np.asarray(test.label_ids)
    n_train = len(data["train"])
    train_tokens = int(sum(len(ids) for ids in data["train"]["input_ids"]))
    result = {
        "task": name,
        "test_macro_f1": plain_macro_f1(multi, test_logits, test_targets, len(labels)),
        "validation_macro_f1": trainer.state.best_metric,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name or None,
        "epochs": EPOCHS,
        "steps": trainer.state.global_step,
        "train_samples": n_train * EPOCHS,
        "train_tokens": train_tokens * EPOCHS,
        "step_time_s": timer.step_s,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "first_step_s": timer.first_step_s,
        "time_to_best_s": timer.time_to_best_s,
        "training_end_s": train_end,
        "wall_time_s": time.time() - timer.started,
    }
    if multi:
        result["test_macro_f1_at_least_one_label"] = _at_least_one_label_f1(
            test_logits, test_targets, task.get("max_labels")
        )
    return result


def _at_least_one_label_f1(
    logits: np.ndarray, targets: np.ndarray, max_labels: int | None
) -> float:
    """Multi-label macro-F1 with scrclf's default rule (top label when none passes 0.5)."""
    from sklearn.metrics import f1_score

    from scrclf.calibration import decide_multi_label, sigmoid

    probs = sigmoid(logits)
    pred = decide_multi_label(probs, [0.5] * probs.shape[1], max_labels=max_labels)
    return float(
        f1_score(targets.astype(np.int64), pred.astype(np.int64), average="macro", zero_division=0)
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_reference(
    data_dir: Path,
    tasks: Sequence[Mapping[str, Any]],
    encoder_path: str,
    out_dir: Path,
    seed: int = 42,
) -> dict[str, Any]:
    """All tasks, one after the other; totals are sums over the fine-tunes."""
    started = time.time()
    splits = {s: read_jsonl(Path(data_dir) / f"{s}.jsonl") for s in ("train", "validation", "test")}
    per_task = [fine_tune_task(task, splits, encoder_path, out_dir, seed) for task in tasks]
    total = {
        key: sum(r[key] for r in per_task)
        for key in (
            "train_samples",
            "train_tokens",
            "step_time_s",
            "time_to_best_s",
            "training_end_s",
            "wall_time_s",
        )
    }
    scores = {r["task"]: r["test_macro_f1"] for r in per_task}
    return {
        "per_task": per_task,
        "total": total,
        "test_macro_f1": scores,
        "test_mean_macro_f1": float(np.mean(list(scores.values()))),
        "samples_per_second": total["train_samples"] / total["step_time_s"],
        "tokens_per_second": total["train_tokens"] / total["step_time_s"],
        "elapsed_s": time.time() - started,
    }


def main(argv: Sequence[str] | None = None) -> None:
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=root / "data" / "scr_recs")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for checkpoints")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    from scrclf.modeling.encoders import resolve_path

    tasks = OmegaConf.to_container(OmegaConf.load(root / "configs" / "task" / "codebook.yaml"))[
        "tasks"
    ]
    encoder = resolve_path(str(OmegaConf.load(root / "configs" / "model" / "minilm.yaml").encoder))
    print(json.dumps(run_reference(args.data, tasks, encoder, args.out, args.seed), indent=2))


if __name__ == "__main__":
    main()
