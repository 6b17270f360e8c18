"""Sizes, parity and speed of an export's three backends: torch fp32, ONNX fp32, ONNX int8.

    python benchmarks/export_parity.py --model models/NAME --data data/scr_recs/test.jsonl
    python benchmarks/export_parity.py --model models/NAME --data test.jsonl --threads 4 \\
        --output /tmp/bench

Measures, on the texts (and findings) of ``--data``:
  * the size of each artifact in the export folder;
  * max |logit difference| of ONNX fp32 and int8 against torch, and per-task decision
    agreement (multi-label: the whole label set must match);
  * latency at batch 1 (p50 and p95 over ``--latency-items`` single-item calls);
  * throughput at batch 32, two ways, after a warm-up: calls of 32 items in file order
    (a stream of small requests; on CPU each call is split by length where one batch would
    carry more padding than a quarter of its real tokens), and the whole file in
    one call with ``batch_size=32`` (as ``scrclf predict`` reads a file: items are sorted by
    length before batching, so batches carry little padding).
Timings are end to end through ``Classifier.logits``: tokenization, padding and the forward
pass. torch and onnxruntime use the same number of intra-op threads (``--threads``).
Writes ``export_parity_<name>.json`` and ``export_parity_<name>.md`` into ``--output``
(default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {
    "torch fp32": {"backend": "torch"},
    "onnx fp32": {"backend": "onnx"},
    "onnx int8": {"backend": "onnx", "quantized": True},
}
THROUGHPUT_BATCH = 32


def artifact_sizes(model_dir: Path) -> dict[str, int]:
    """Bytes per artifact: weights, each ONNX graph, tokenizer, wheel(s), and the whole folder."""
    sizes = {}
    for rel in ("model.safetensors", "onnx/model.onnx", "onnx/model.int8.onnx", "tokenizer.json"):
        if (model_dir / rel).is_file():
            sizes[rel] = (model_dir / rel).stat().st_size
    for wheel in sorted(model_dir.glob("dist/*.whl")):
        sizes[wheel.relative_to(model_dir).as_posix()] = wheel.stat().st_size
    sizes["folder total"] = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return sizes


# Instruction sets that decide how fast the int8 and bf16 kernels run.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def speed_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """Which of :data:`SPEED_FLAGS` the CPU reports (empty where ``cpuinfo`` is absent)."""
    from scrclf.training.run import cpu_flags

    present = cpu_flags(cpuinfo)
    return [flag for flag in SPEED_FLAGS if flag in present]


def time_interleaved(clfs: dict, calls: list, batch_size: int, warmup: int) -> dict:
    """Seconds per call of ``Classifier.logits`` for each backend, after ``warmup`` untimed
    calls each. The backends take turns on every call (in rotating order), so a change of
    machine speed during the run weighs on all of them alike."""
    names = list(clfs)
    for name in names:
        for texts, findings in calls[:warmup]:
            clfs[name].logits(texts, findings, batch_size=batch_size)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, (texts, findings) in enumerate(calls):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            clfs[name].logits(texts, findings, batch_size=batch_size)
            out[name].append(time.perf_counter() - start)
    return {name: np.asarray(v) for name, v in out.items()}


def benchmark(model_dir: Path, data: Path, threads: int, latency_items: int, warmup: int) -> dict:
    import torch

    import scrclf
    from scrclf.data.records import read_records
    from scrclf.export.build import measure_parity
    from scrclf.training.run import cpu_name

    torch.set_num_threads(threads)
    rows = [r.data for r in read_records(data)]
    texts = [r["text"] for r in rows]
    findings = [r.get("finding") for r in rows]
    clfs = {name: scrclf.load(model_dir, threads=threads, **kw) for name, kw in BACKENDS.items()}

    parity = measure_parity(
        clfs["torch fp32"],
        {"onnx fp32": clfs["onnx fp32"], "onnx int8": clfs["onnx int8"]},
        texts,
        findings,
    )
    # int8 against the fp32 graph it was made from, and against itself in other batches.
    int8_vs_fp32 = measure_parity(
        clfs["onnx fp32"], {"onnx int8": clfs["onnx int8"]}, texts, findings
    )["onnx int8"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = clfs["onnx int8"].predict(texts, findings, batch_size=1)
        batched = clfs["onnx int8"].predict(texts, findings, batch_size=THROUGHPUT_BATCH)

    def labels(item: dict) -> dict:
        return {task: v.get("labels", v.get("label")) for task, v in item.items()}

    batch_independence = {
        "items": len(texts),
        "same_labels_batch_1_and_32": sum(
            labels(a) == labels(b) for a, b in zip(alone, batched, strict=True)
        ),
    }
    speed = {}
    single = [
        ([t], [f]) for t, f in zip(texts[:latency_items], findings[:latency_items], strict=True)
    ]
    batches = [
        (texts[i : i + THROUGHPUT_BATCH], findings[i : i + THROUGHPUT_BATCH])
        for i in range(0, len(texts), THROUGHPUT_BATCH)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation warnings: the same for every backend
        latency = time_interleaved(clfs, single, 1, warmup)
        per_batch = time_interleaved(clfs, batches, THROUGHPUT_BATCH, min(warmup, len(batches)))
        # The whole file once per backend in each of two opposite orders.
        whole: dict[str, list[float]] = {name: [] for name in clfs}
        for order in (list(clfs), list(clfs)[::-1]):
            for name in order:
                start = time.perf_counter()
                clfs[name].logits(texts, findings, batch_size=THROUGHPUT_BATCH)
                whole[name].append(time.perf_counter() - start)
        for name in clfs:
            speed[name] = {
                "latency_ms_p50": float(np.percentile(latency[name], 50) * 1000),
                "latency_ms_p95": float(np.percentile(latency[name], 95) * 1000),
                "throughput_items_per_s": float(len(texts) / per_batch[name].sum()),
                "file_throughput_items_per_s": float(len(texts) / np.mean(whole[name])),
            }
    meta = json.loads((model_dir / "scrclf.json").read_text(encoding="utf-8"))
    return {
        "model": meta.get("name", model_dir.name),
        "data": {"file": data.name, "n_items": len(texts)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(),
            "cpu_flags": speed_flags(),
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "python": platform.python_version(),
        },
        "versions": meta.get("versions"),
        "int8_recipe": (meta.get("onnx") or {}).get("quantization"),
        "sizes_bytes": artifact_sizes(model_dir),
        "parity": parity,
        "int8_vs_onnx_fp32": int8_vs_fp32,
        "int8_batch_independence": batch_independence,
        "speed": speed,
        "settings": {
            "latency_items": len(single),
            "warmup_calls": warmup,
            "throughput_batch": THROUGHPUT_BATCH,
            "timed": "Classifier.logits: tokenization + padding + forward",
            "file_throughput": "one Classifier.logits call over the whole file, batch_size 32;"
            " mean of two, the backends in opposite orders",
            "order": "backends take turns on every timed call, in rotating order",
        },
    }


def _flags_text(machine: dict) -> str:
    if "cpu_flags" not in machine:  # results written before the flags were recorded
        return "instruction sets not recorded"
    flags = machine["cpu_flags"]
    return "with " + ", ".join(flags) if flags else "none of " + ", ".join(SPEED_FLAGS)


def markdown(result: dict) -> str:
    """The benchmark as Markdown tables."""
    machine = result["machine"]
    lines = [
        f"# Export parity and speed: {result['model']}",
        "",
        f"{result['data']['n_items']} items of `{result['data']['file']}`; "
        f"{machine['cpu']} ({_flags_text(machine)}), {machine['threads']} intra-op "
        "thread(s) for torch and onnxruntime; "
        f"measured {result['created']}.",
        "",
        "| artifact | size (MiB) |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {size / 2**20:.2f} |" for name, size in result["sizes_bytes"].items()]
    tasks = list(result["parity"]["onnx fp32"]["label_agreement"])
    torch_speed = result["speed"].get("torch fp32")
    lines += [
        "",
        "| backend | max abs logit diff vs torch | "
        + " | ".join(f"{t} items equal" for t in tasks)
        + " | "
        + " | ".join(f"{t} labels equal" for t in tasks)
        + " | latency p50 (ms, batch 1) | latency p95 (ms, batch 1) "
        "| throughput, calls of 32 (items/s) | throughput, whole file at batch 32 (items/s) "
        "| speed-up vs torch (p50 / calls of 32 / whole file) |",
        "|---|---|" + "---|" * (2 * len(tasks)) + "---|---|---|---|---|",
    ]
    for name, speed in result["speed"].items():
        parity = result["parity"].get(name)
        diff = f"{parity['max_abs_logit_diff']:.2e}" if parity else "(reference)"
        items = [f"{parity['label_agreement'][t]:.3f}" if parity else "1.000" for t in tasks]
        labels = [
            f"{parity.get('decision_agreement', parity['label_agreement'])[t]:.4f}"
            if parity
            else "1.0000"
            for t in tasks
        ]
        file_speed = speed.get("file_throughput_items_per_s")
        torch_file = (torch_speed or {}).get("file_throughput_items_per_s")
        ratio = (
            f"{torch_speed['latency_ms_p50'] / speed['latency_ms_p50']:.2f}x / "
            f"{speed['throughput_items_per_s'] / torch_speed['throughput_items_per_s']:.2f}x"
            + (f" / {file_speed / torch_file:.2f}x" if file_speed and torch_file else "")
            if torch_speed
            else ""
        )
        lines.append(
            f"| {name} | {diff} | "
            + " | ".join(items + labels)
            + f" | {speed['latency_ms_p50']:.2f} | {speed['latency_ms_p95']:.2f} | "
            f"{speed['throughput_items_per_s']:.1f} | "
            + (f"{file_speed:.1f}" if file_speed else "")
            + f" | {ratio} |"
        )
    lines += [
        "",
        "Items equal: share of items whose decisions for the task equal torch's "
        "(multi-label: the whole label set). Labels equal: share of single label "
        "decisions (item x label for multi-label tasks). Timings are end to end "
        "(tokenization, padding, forward pass).",
    ]
    vs_fp32 = result.get("int8_vs_onnx_fp32")
    if vs_fp32:
        lines += [
            "",
            "int8 against the fp32 ONNX graph: items equal "
            + ", ".join(f"{t} {v:.4f}" for t, v in vs_fp32["label_agreement"].items())
            + "; labels equal "
            + ", ".join(f"{t} {v:.4f}" for t, v in vs_fp32["decision_agreement"].items())
            + f"; max abs logit diff {vs_fp32['max_abs_logit_diff']:.3f}.",
        ]
    independence = result.get("int8_batch_independence")
    if independence:
        lines += [
            "",
            f"int8 labels at batch 1 and batch {THROUGHPUT_BATCH}: "
            f"{independence['same_labels_batch_1_and_32']} of {independence['items']} "
            "items identical.",
        ]
    recipe = result.get("int8_recipe")
    if recipe:
        smoothing = recipe.get("smoothing") or {}
        fused = recipe.get("fused_operators") or {}
        lines += [
            "",
            f"int8 graph: {recipe.get('graph', 'exported graph')}; operators after fusion: "
            + (", ".join(f"{k} x{v}" for k, v in fused.items()) or "nothing")
            + "; "
            + (
                f"SmoothQuant alpha {smoothing['alpha']} on "
                f"{smoothing.get('calibration_items')} "
                f"{smoothing.get('calibration_split')} items"
                if smoothing
                else "no smoothing"
            )
            + f"; {recipe.get('method')} ({recipe.get('weight_type')} weights, "
            + ("per channel" if recipe.get("per_channel") else "per tensor")
            + (f"; activations {recipe['activations']}" if recipe.get("activations") else "")
            + ").",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="an export folder")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a data file with a 'text' (and optional 'finding') column",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument(
        "--latency-items", type=int, default=200, help="single-item calls timed for latency"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    args = parser.parse_args(argv)
    if not (args.model / "scrclf.json").is_file():
        parser.error(f"--model {args.model}: not an export folder (no scrclf.json)")

    from scrclf import atomic

    result = benchmark(args.model, args.data, args.threads, args.latency_items, args.warmup)
    stem = f"export_parity_{result['model']}"
    atomic.write_json(args.output / f"{stem}.json", result)
    atomic.write_text(args.output / f"{stem}.md", markdown(result))
    print(markdown(result))
    print(f"written to {args.output / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
