"""Ways of building the int8 graph, compared on agreement with torch and on speed.

    python benchmarks/int8_recipes.py --model models/scr-minilm --data-dir data/scr_recs
    python benchmarks/int8_recipes.py --model models/NAME --alphas 0.5,0.7,0.85 --threads 2

For an export folder, builds the int8 graph several ways and measures each on the
validation and test splits against the torch fp32 model:
  * ``dynamic``: ``quantize_dynamic`` (per-channel QInt8) applied to ``onnx/model.onnx``;
  * ``fused attention + smooth 0.8``: onnxruntime's fused ``Attention`` operator (its
    query, key and value projections stay fp32), SmoothQuant 0.8, per-token int8;
  * ``no smoothing``: attention as plain operators, every weight product per-token int8
    (``scrclf.export.quantization.quantize_per_token``: batch-independent);
  * ``smooth A``: as ``no smoothing``, after SmoothQuant smoothing of strength A calibrated
    on the export's calibration sample of the train split (what ``scripts/export.py`` ships
    for ``quantization.smooth_alpha``).
Reports, per split and task, the share of items whose decisions equal torch's (multi-label:
the whole set), the share of single decisions that do, the max |logit difference|, and
throughput at batch 32 (items/s, forward pass only) as a ratio to torch in the same job.
Validation is for choosing a recipe; test only confirms. Writes ``int8_recipes_<name>.json``
and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def split_inputs(path: Path) -> tuple[list[str], list[str | None]]:
    from scrclf.data.records import read_records

    rows = [r.data for r in read_records(path)]
    return [r["text"] for r in rows], [r.get("finding") for r in rows]


def run_graph(
    path: Path, batches: list[dict], threads: int, output_names: list[str]
) -> tuple[list[np.ndarray], float]:
    import onnxruntime as ort

    from scrclf.inference.classifier import DISABLED_ORT_OPTIMIZERS

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=DISABLED_ORT_OPTIMIZERS,
    )
    names = {i.name for i in session.get_inputs()}
    feeds = [{k: v for k, v in b.items() if k in names} for b in batches]
    session.run(output_names, feeds[0])
    start = time.perf_counter()
    outs = [session.run(output_names, f) for f in feeds]
    seconds = time.perf_counter() - start
    logits = [np.concatenate([o[i] for o in outs]) for i in range(len(output_names))]
    return logits, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="an export folder")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "scr_recs")
    parser.add_argument("--alphas", default="0.5,0.65,0.8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import scrclf
    from scrclf import atomic
    from scrclf.export.build import _agreement
    from scrclf.export.onnx import quiet_exporters as _quiet
    from scrclf.export.quantization import build_int8_graph, calibration_batches
    from scrclf.settings import QuantizationSettings

    torch.set_num_threads(args.threads)
    ref = scrclf.load(args.model, backend="torch")
    model = ref.engine.model
    tasks = ref.tasks
    output_names = ["logits_" + t.name for t in tasks]
    splits = {}
    for split in ("validation", "test"):
        texts, findings = split_inputs(args.data_dir / f"{split}.jsonl")
        enc, _ = ref.encode(texts, findings)
        batches = [
            ref.pad(enc, list(range(i, min(i + BATCH, len(texts)))))
            for i in range(0, len(texts), BATCH)
        ]
        start = time.perf_counter()
        with torch.no_grad():
            outs = [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits for b in batches]
        seconds = time.perf_counter() - start
        logits = [torch.cat([o[i] for o in outs]).numpy() for i in range(len(tasks))]
        splits[split] = {"batches": batches, "torch": logits, "torch_s": seconds, "n": len(texts)}
    train_texts, train_findings = split_inputs(args.data_dir / "train.jsonl")
    calibration = calibration_batches(
        ref, train_texts, train_findings, QuantizationSettings.defaults().calibration_items
    )

    recipes = []
    with tempfile.TemporaryDirectory(prefix="int8_recipes_") as tmp:

        def measure(name: str, path: Path, info: dict | None) -> None:
            row = {"recipe": name, "size_mib": path.stat().st_size / 2**20, "info": info}
            for split, s in splits.items():
                logits, seconds = run_graph(path, s["batches"], args.threads, output_names)
                row[split] = {
                    "items_equal": _agreement(tasks, s["torch"], logits),
                    "labels_equal": _agreement(tasks, s["torch"], logits, per_label=True),
                    "max_abs_logit_diff": max(
                        float(np.max(np.abs(a - b)))
                        for a, b in zip(s["torch"], logits, strict=True)
                    ),
                    "throughput_ratio": s["torch_s"] / seconds,
                    "throughput_items_per_s": s["n"] / seconds,
                }
            recipes.append(row)
            print(
                f"{name}: test items equal {row['test']['items_equal']}, "
                f"throughput x{row['test']['throughput_ratio']:.2f}",
                file=sys.stderr,
            )

        plain = Path(tmp) / "dynamic.onnx"
        with _quiet("root", "onnxruntime"):
            quantize_dynamic(
                str(args.model / "onnx" / "model.onnx"),
                str(plain),
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
        measure("dynamic", plain, None)
        fused = Path(tmp) / "attention.onnx"
        measure(
            "fused attention + smooth 0.8",
            fused,
            build_int8_graph(model, fused, calibration, smooth_alpha=0.8, fuse_attention=True),
        )
        plain = Path(tmp) / "plain.onnx"
        measure(
            "no smoothing", plain, build_int8_graph(model, plain, calibration, smooth_alpha=None)
        )
        for alpha in [float(a) for a in args.alphas.split(",") if a.strip()]:
            path = Path(tmp) / f"smooth_{alpha}.onnx"
            measure(
                f"smooth {alpha:g}",
                path,
                build_int8_graph(model, path, calibration, smooth_alpha=alpha),
            )

    name = args.model.name
    result = {
        "model": name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads,
        "batch": BATCH,
        "calibration_items": int(sum(len(b["input_ids"]) for b in calibration)),
        "recipes": recipes,
    }
    task_names = [t.name for t in tasks]
    lines = [
        f"# int8 recipes: {name}",
        "",
        f"Agreement with torch fp32 and throughput at batch {BATCH} ({args.threads} "
        f"thread(s), forward pass only, as a ratio to torch in the same job); measured "
        f"{result['measured_at']}. Items equal: share of items whose decisions equal "
        "torch's (themes: the whole set); theme decisions: share of item x theme "
        "decisions.",
        "",
    ]
    for split in ("validation", "test"):
        lines += [
            f"## {split}",
            "",
            "| recipe | size (MiB) | max abs logit diff | "
            + " | ".join(f"{t} items equal" for t in task_names)
            + " | mean | theme decisions equal | throughput vs torch |",
            "|---|---:|---:|" + "---:|" * len(task_names) + "---:|---:|---:|",
        ]
        for row in recipes:
            r = row[split]
            multi = [t.name for t in tasks if t.is_multi_label]
            per_label = f"{r['labels_equal'][multi[0]]:.4f}" if multi else ""
            lines.append(
                f"| {row['recipe']} | {row['size_mib']:.1f} | {r['max_abs_logit_diff']:.3f} | "
                + " | ".join(f"{r['items_equal'][t]:.3f}" for t in task_names)
                + f" | {np.mean(list(r['items_equal'].values())):.3f} | {per_label} | "
                f"{r['throughput_ratio']:.2f}x |"
            )
        lines.append("")
    text = "\n".join(lines)
    atomic.write_json(args.out / f"int8_recipes_{name}.json", result)
    atomic.write_text(args.out / f"int8_recipes_{name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
