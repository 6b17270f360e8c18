"""Training throughput on one GPU: the plain Trainer against the lean loop, with MFU.

    python benchmarks/gpu_throughput.py              # on a CUDA machine
    python benchmarks/gpu_throughput.py --smoke      # tiny sizes; any device, CPU included
    python benchmarks/gpu_throughput.py --no-compile --batches 1024   # a shorter run

One prepared script for a GPU session. It builds a synthetic corpus shaped like ours
(50,000 text pairs, about 110 tokens each, three task targets) and measures training
samples per second, after a warm-up, for:

* ``trainer fp32 b32``: the plain Hugging Face Trainer (``AutoModelForSequenceClassification``,
  dynamic padding, random order) in fp32 at batch 32;
* ``trainer bf16 b32``: the same with ``bf16=True``;
* ``lean bf16 b512`` / ``b1024``: scrclf's lean loop (:mod:`scrclf.training.hand_loop`) with
  length-bucketed batches, bf16 autocast and fused AdamW, eager;
* ``... compiled``: the same with ``torch.compile(dynamic=False)`` on 7 static lengths.

MFU (model FLOPs utilisation) = 6 * N * T / (t * peak), where N is the number of model
parameters (embeddings included), T the non-padding tokens trained in t seconds, and
peak the card's dense bf16 tensor-core rate (table below; the fp32 arm is also set against
the bf16 peak, which is what the card could deliver). ``hfu_padded`` counts padding tokens
too. The 6 * N * T rule ignores attention's sequence-squared term (small at ~110 tokens).

Writes ``<out>/gpu_<card>.json`` and ``.md`` (default benchmarks/results/), rewritten after
every arm so that a run cut short keeps what it measured; compiling the static shapes
takes most of the time of the compiled arms. Target: 20,000 training samples/s on one H100.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_SAMPLES_PER_S = 20_000

# Dense (no sparsity) bf16 tensor-core peaks from the vendor datasheets, in FLOP/s.
# Order matters: the first pattern found in the device name wins.
BF16_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200 NVL", 835.0e12),
    ("H200", 989.4e12),  # SXM
    ("H100 PCIE", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),  # SXM5 (HBM3)
    ("A100", 312.0e12),  # SXM4 and PCIe
]

TASK_SHAPES = [
    ("themes", "multi_label", 11),
    ("evidence", "single_label", 5),
    ("action_strength", "single_label", 3),
]


def peak_flops(device_name: str) -> float | None:
    name = device_name.upper()
    for pattern, flops in BF16_PEAK_FLOPS:
        if pattern in name:
            return flops
    return None


def card_slug(device_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_") or "device"


# --------------------------------------------------------------------------- corpus


def synthetic_lengths(
    n: int, mean: float, low: int, high: int, rng: np.random.Generator
) -> np.ndarray:
    """Token counts with a right-skewed spread like our text pairs (gamma, shape 4)."""
    shape = 4.0
    lengths = rng.gamma(shape, mean / shape, size=n)
    return np.clip(np.rint(lengths), low, high).astype(np.int64)


def synthetic_corpus(n: int, mean_length: float, max_length: int, vocab_size: int, seed: int):
    """Token ids (with [CLS]/[SEP] framing and a second segment), types and targets."""
    rng = np.random.default_rng(seed)
    lengths = synthetic_lengths(n, mean_length, 16, max_length, rng)
    ids, types = [], []
    for length in lengths:
        body = rng.integers(1000, vocab_size, size=int(length)).tolist()
        first = max(1, int(length * 0.4))
        body[0], body[first], body[-1] = 101, 102, 102  # [CLS] text [SEP] finding [SEP]
        ids.append(body)
        types.append([0] * (first + 1) + [1] * (int(length) - first - 1))
    targets: dict[str, np.ndarray] = {}
    for name, kind, k in TASK_SHAPES:
        if kind == "multi_label":
            multi = np.zeros((n, k), dtype=np.float32)
            for i in range(n):
                multi[i, rng.choice(k, size=int(rng.integers(1, 4)), replace=False)] = 1.0
            targets[name] = multi
        else:
            targets[name] = rng.integers(0, k, size=n).astype(np.int64)
    return ids, types, targets


# ------------------------------------------------------------------------------ models


def encoder_source(smoke: bool) -> dict[str, Any]:
    """MiniLM from its package, or (smoke) the tiny untrained BERT of configs/model/tiny.yaml."""
    from omegaconf import OmegaConf

    name = "tiny" if smoke else "minilm"
    return OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml"))


def scrclf_model(model_cfg: dict[str, Any]):
    from scrclf.modeling.encoders import build_model
    from scrclf.tasks import TaskSet

    tasks = TaskSet.from_config(
        [
            {"name": name, "type": kind, "labels": [f"{name}_{i}" for i in range(k)]}
            for name, kind, k in TASK_SHAPES
        ]
    )
    return build_model(model_cfg, tasks, 512), tasks


def plain_classifier(model_cfg: dict[str, Any], num_labels: int):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from scrclf.modeling.encoders import resolve_path

    if model_cfg.get("encoder_config"):
        enc = dict(model_cfg["encoder_config"])
        config = AutoConfig.for_model(enc.pop("model_type"), num_labels=num_labels, **enc)
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_path(model_cfg["encoder"]), num_labels=num_labels
    )


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------- arms


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def trainer_arm(
    model_cfg, ids, types, targets, batch: int, bf16: bool, warmup: int, steps: int, tmp: Path
) -> dict[str, Any]:
    """The plain Trainer on the evidence task; timed between two step boundaries."""
    import datasets
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from scrclf.modeling.encoders import resolve_path

    _reset_peak()
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(model_cfg["tokenizer"]))
    n = (warmup + steps) * batch
    data = datasets.Dataset.from_dict(
        {
            "input_ids": ids[:n],
            "token_type_ids": types[:n],
            "attention_mask": [[1] * len(x) for x in ids[:n]],
            "labels": targets["evidence"][:n].tolist(),
        }
    )
    model = plain_classifier(model_cfg, 5)
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                _sync()
                marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(tmp / "trainer"),
        per_device_train_batch_size=batch,
        max_steps=warmup + steps,
        bf16=bf16,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=10**9,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[Clock()],
    )
    trainer.train()
    seconds = marks[warmup + steps] - marks[warmup]
    samples = steps * batch
    mean_len = float(np.mean([len(x) for x in ids[:n]]))
    return {
        "samples_per_second": samples / seconds,
        "tokens_per_second": samples * mean_len / seconds,
        "padded_tokens_per_second": None,
        "seconds": seconds,
        "steps": steps,
        "params": n_params(model),
        "peak_cuda_mib": _peak_mib(),
        "warmup_s": None,
        "tokens_note": "tokens/s = samples/s x mean item length (random order)",
    }


def lean_arm(
    model_cfg, store, batch: int, bf16: bool, compile_: bool, epochs: int, device: str, buckets: int
) -> dict[str, Any]:
    """The lean loop: one warm-up epoch (compilation included), then ``epochs`` timed."""
    from omegaconf import OmegaConf

    from scrclf.settings import compose
    from scrclf.training.hand_loop import LeanSettings, LeanTrainer, choose_buckets

    _reset_peak()
    model, _ = scrclf_model(model_cfg)
    trainer = compose(
        overrides=[
            "trainer=gpu_fast",
            f"trainer.device={device}",
            f"trainer.batch_size={batch}",
            f"trainer.eval_batch_size={batch}",
            "trainer.learning_rate=1e-4",
            "trainer.warmup_ratio=0.05",
            f"trainer.max_epochs={epochs + 1}",
            f"trainer.precision={'bf16' if bf16 else 'fp32'}",
            f"trainer.compile={compile_}",
            "trainer.logging_steps=1000000000",
        ]
    ).trainer
    settings = LeanSettings.from_config(OmegaConf.to_container(trainer, resolve=True))
    bucket_list = choose_buckets(store.lengths, buckets) if settings.compile else None
    steps = math.ceil(len(store) / batch) * (epochs + 1)
    trainer = LeanTrainer(model, settings, steps, bucket_list)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    trainer.train_epoch(store, rng)
    warmup_s = time.perf_counter() - t0
    items = tokens = padded = 0
    seconds = 0.0
    for _ in range(epochs):
        stats = trainer.train_epoch(store, rng)
        items += stats.items
        tokens += stats.tokens
        padded += stats.padded_tokens
        seconds += stats.seconds
    return {
        "samples_per_second": items / seconds,
        "tokens_per_second": tokens / seconds,
        "padded_tokens_per_second": padded / seconds,
        "seconds": seconds,
        "steps": trainer.step_count,
        "params": n_params(model),
        "peak_cuda_mib": _peak_mib(),
        "warmup_s": warmup_s,
        "buckets": bucket_list,
        "effective_precision": settings.precision,
        "compiled": settings.compile,
        "learning_rate": settings.learning_rate,
    }


def with_mfu(result: dict[str, Any], peak: float | None) -> dict[str, Any]:
    if peak is None:
        result.update(mfu=None, hfu_padded=None)
        return result
    result["mfu"] = 6 * result["params"] * result["tokens_per_second"] / peak
    padded = result.get("padded_tokens_per_second")
    result["hfu_padded"] = 6 * result["params"] * padded / peak if padded else None
    return result


# ------------------------------------------------------------------------------ report


def markdown(report: dict[str, Any]) -> str:
    peak = report["peak_bf16_flops"]
    peak_text = f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown for this device"
    lines = [
        f"# Training throughput on {report['device']}",
        "",
        f"Measured {report['measured_at']} with `{report['command']}`; synthetic corpus of "
        f"{report['corpus']['items']:,} items, mean {report['corpus']['mean_tokens']:.0f} "
        f"tokens. MFU = 6 x N x T / (t x peak), N = {report['arms'][0]['params']:,} "
        f"parameters, peak {peak_text}.",
        "",
        "| arm | samples/s | tokens/s | MFU | warm-up (s) | peak CUDA MiB | x Trainer fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = report["arms"][0]["samples_per_second"] if report["arms"] else None
    for arm in report["arms"]:
        mfu = f"{arm['mfu']:.1%}" if arm.get("mfu") is not None else "n/a"
        warm = f"{arm['warmup_s']:.1f}" if arm.get("warmup_s") is not None else ""
        peak = f"{arm['peak_cuda_mib']:.0f}" if arm.get("peak_cuda_mib") is not None else ""
        lines.append(
            f"| {arm['name']} | {arm['samples_per_second']:,.0f} | "
            f"{arm['tokens_per_second']:,.0f} | {mfu} | {warm} | {peak} | "
            f"{arm['samples_per_second'] / base:.2f}x |"
        )
    best = max(report["arms"], key=lambda a: a["samples_per_second"])
    if report["smoke"]:
        verdict = "smoke run (tiny model and corpus): not comparable with the target"
    else:
        met = best["samples_per_second"] >= TARGET_SAMPLES_PER_S
        verdict = (
            f"target {TARGET_SAMPLES_PER_S:,} samples/s on one H100: {'met' if met else 'not met'}"
        )
    lines += [
        "",
        f"Best: {best['name']} at {best['samples_per_second']:,.0f} samples/s; {verdict}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny model and corpus, few steps; runs on CPU (checks the script)",
    )
    parser.add_argument("--items", type=int, default=None, help="synthetic items (default 50,000)")
    parser.add_argument("--batches", default=None, help="lean-loop batch sizes (default 512,1024)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled arms")
    parser.add_argument(
        "--buckets",
        type=int,
        default=7,
        help="static sequence lengths for the compiled arms (default 7)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        parser.error("no CUDA GPU visible; use --smoke to check the script on a CPU")
    device = "cuda" if cuda else "cpu"
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_flops(device_name) if cuda else None
    if args.smoke:
        if not cuda:
            torch.set_num_threads(1)  # tiny shapes gain nothing from more; robust on busy CPUs
        items, mean_len, max_len = args.items or 256, 40, 96
        batches = [int(b) for b in (args.batches or "32,64").split(",")]
        trainer_warmup, trainer_steps, lean_epochs, ref_batch = 2, 4, 1, 16
    else:
        items, mean_len, max_len = args.items or 50_000, 110, 256
        batches = [int(b) for b in (args.batches or "512,1024").split(",")]
        trainer_warmup, trainer_steps, lean_epochs, ref_batch = 30, 300, 2, 32
    model_cfg = encoder_source(args.smoke)
    vocab = int((model_cfg.get("encoder_config") or {}).get("vocab_size", 30522))
    started = time.time()
    ids, types, targets = synthetic_corpus(items, mean_len, max_len, vocab, seed=0)

    from scrclf.training.hand_loop import TokenStore

    store = TokenStore(ids, types, targets)
    arms: list[dict[str, Any]] = []

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_{card_slug(device_name)}"
    report = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/gpu_throughput.py", *(argv or sys.argv[1:])]),
        "device": device_name,
        "peak_bf16_flops": peak,
        "mfu_formula": "6 * N * T / (t * peak); N = all model parameters, T = non-padding tokens",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "corpus": {
            "items": items,
            "mean_tokens": float(store.lengths.mean()),
            "max_tokens": int(store.lengths.max()),
        },
        "target_samples_per_second": TARGET_SAMPLES_PER_S,
        "arms": arms,
    }

    def write() -> None:
        report["elapsed_s"] = time.time() - started
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(report))

    plan = [
        (
            f"trainer fp32 b{ref_batch}",
            lambda tmp: trainer_arm(
                model_cfg, ids, types, targets, ref_batch, False, trainer_warmup, trainer_steps, tmp
            ),
        )
    ]
    if cuda:
        plan.append(
            (
                f"trainer bf16 b{ref_batch}",
                lambda tmp: trainer_arm(
                    model_cfg,
                    ids,
                    types,
                    targets,
                    ref_batch,
                    True,
                    trainer_warmup,
                    trainer_steps,
                    tmp,
                ),
            )
        )
    for batch in batches:
        plan.append(
            (
                f"lean {'bf16' if cuda else 'fp32'} b{batch}",
                lambda tmp, b=batch: lean_arm(
                    model_cfg, store, b, cuda, False, lean_epochs, device, args.buckets
                ),
            )
        )
    if cuda and not args.no_compile:
        for batch in batches:
            plan.append(
                (
                    f"lean bf16 b{batch} compiled",
                    lambda tmp, b=batch: lean_arm(
                        model_cfg, store, b, True, True, lean_epochs, device, args.buckets
                    ),
                )
            )
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as tmp:
        for name, run in plan:
            result = with_mfu(run(Path(tmp)), peak)
            result["name"] = name
            arms.append(result)
            print(
                f"{name}: {result['samples_per_second']:,.0f} samples/s"
                + (f", MFU {result['mfu']:.1%}" if result.get("mfu") is not None else ""),
                flush=True,
            )
            write()
    print(markdown(report))
    print(f"written: {args.out / (stem + '.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
