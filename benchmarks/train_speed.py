"""Training cost and quality of ``scripts/train.py`` against a plain Hugging Face reference.

    python benchmarks/train_speed.py                       # reference + the default config
    python benchmarks/train_speed.py --arms default        # the default config alone
    python benchmarks/train_speed.py --arms reference,default,fast \\
        --arm "fast=trainer.max_epochs=3 trainer.learning_rate=3e-4" --tag epochs
    python benchmarks/train_speed.py --ablation --tag ablation   # the ladder in ABLATION
    python benchmarks/train_speed.py --limit 48 --tag check      # a quick end-to-end check
    python benchmarks/train_speed.py --components                # the parts of one step
    python benchmarks/train_speed.py --heads                     # one step by head setting

Every arm runs in its own child process, one after the other in this job, so that peak
memory (``ru_maxrss``; CUDA max allocated on a GPU) belongs to one arm. An arm is either
``reference`` (three plain fine-tunes, see benchmarks/reference_trainer.py) or a list of
Hydra overrides applied to the default training config. Per arm it records:

* **time to best**: seconds from the start of training (data loading, tokenization and
  model loading included, imports excluded) to the checkpoint that ends up selected;
  for the reference, the sum over its three fine-tunes;
* **wall time**: the same start to the end of training and the final evaluation;
* **throughput**: training samples (and non-padding tokens) per second of optimizer
  steps (forward, backward, update; evaluation and saving excluded);
* **peak memory** of the child process, and the 1-minute load average before and after;
* **quality**: each task's test macro-F1 and their mean; scrclf's at its calibrated
  decisions (what it ships) and at the default decisions, the reference's at argmax or
  ``sigmoid >= 0.5``.

Results go to ``<out>/train_speed[_<tag>].json`` and ``.md`` (default benchmarks/results/).
Inference latency is measured by benchmarks/export_parity.py.
"""

from __future__ import annotations

import time

PROCESS_START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple, cast  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("themes", "evidence", "action_strength")

# The ablation ladder: each rung adds one change to the one before. The first rung is the
# configuration before tuning (the previous configs/trainer/cpu.yaml, on the current code:
# threads set to the physical cores, evaluation sorted by length); the last is the shipped
# default (no overrides).
PREVIOUS_DEFAULTS = [
    "trainer.max_epochs=8",
    "trainer.learning_rate=1e-4",
    "trainer.early_stopping_patience=2",
    "trainer.head_lr_scale=null",
    "trainer.optim=adamw_torch",
    "trainer.precision=fp32",
]
FEW_EPOCHS = [
    "trainer.max_epochs=4",
    "trainer.learning_rate=8e-5",
    "trainer.early_stopping_patience=null",
    "trainer.head_lr_scale=40",
]
ABLATION: list[tuple[str, list[str]]] = [
    ("previous defaults", PREVIOUS_DEFAULTS),
    (
        "+ 4 epochs, heads x40 (lr 8e-5)",
        [*FEW_EPOCHS, "trainer.optim=adamw_torch", "trainer.precision=fp32"],
    ),
    ("+ fused AdamW", [*FEW_EPOCHS, "trainer.precision=fp32"]),
    ("+ bf16 autocast (shipped default)", []),
]


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process (MiB) and, on a GPU, CUDA max allocated (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out: dict[str, float | None] = {
        "peak_rss_mib": rss / 2**20 if sys.platform == "darwin" else rss / 1024,
        "cuda_max_allocated_mib": None,
    }
    import torch

    if torch.cuda.is_available():
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------------------------ arms


def _task_specs() -> list[dict[str, Any]]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "task" / "codebook.yaml"))[
        "tasks"
    ]


def run_reference_arm(data_dir: Path, scratch: Path, seed: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from omegaconf import OmegaConf
    from reference_trainer import run_reference

    from scrclf.modeling.encoders import resolve_path

    encoder = resolve_path(str(OmegaConf.load(ROOT / "configs" / "model" / "minilm.yaml").encoder))
    ref = run_reference(data_dir, _task_specs(), encoder, scratch, seed)
    return {
        "kind": "reference",
        "time_to_best_s": ref["total"]["time_to_best_s"],
        "wall_time_s": ref["total"]["wall_time_s"],
        "samples_per_second": ref["samples_per_second"],
        "tokens_per_second": ref["tokens_per_second"],
        "test_macro_f1": ref["test_macro_f1"],
        "test_mean_macro_f1": ref["test_mean_macro_f1"],
        "detail": ref,
    }


def run_candidate_arm(overrides: list[str], data_dir: Path, scratch: Path) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from scrclf.training import train

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"data.dir={data_dir}", f"paths.output_dir={scratch / 'run'}", *overrides],
        )
    summary = train(cfg)
    t = summary["training"]
    return {
        "kind": "scrclf",
        "overrides": overrides,
        "time_to_best_s": t["time_to_best_s"],
        "wall_time_s": t["wall_time_s"],
        "samples_per_second": t.get("step_samples_per_second", t.get("train_samples_per_second")),
        "tokens_per_second": t.get("step_tokens_per_second", t.get("train_tokens_per_second")),
        "test_macro_f1": {k: summary["test"][k]["macro_f1"] for k in TASKS},
        "test_mean_macro_f1": summary["test"]["mean_macro_f1"],
        "test_macro_f1_default_decisions": {
            k: summary["at_default_decisions"]["test"][k]["macro_f1"] for k in TASKS
        },
        "test_mean_macro_f1_default_decisions": summary["at_default_decisions"]["test"][
            "mean_macro_f1"
        ],
        "validation_mean_macro_f1": summary["validation"]["mean_macro_f1"],
        "detail": t,
    }


def child_main(spec: dict[str, Any]) -> None:
    """Run one arm in this (fresh) process and write its result to ``spec['result']``."""
    load_before = os.getloadavg()[0]
    scratch = Path(spec["scratch"])
    if spec["arm"] == "reference":
        result = run_reference_arm(Path(spec["data"]), scratch, spec["seed"])
    else:
        result = run_candidate_arm(spec["overrides"], Path(spec["data"]), scratch)
    import torch

    result.update(
        name=spec["arm"],
        **peak_memory(),
        load_before=load_before,
        load_after=os.getloadavg()[0],
        torch_threads=torch.get_num_threads(),
        process_s=time.time() - PROCESS_START,
    )
    Path(spec["result"]).write_text(json.dumps(result, indent=2, default=float))


def _cpu_busy_seconds() -> float | None:
    """CPU seconds spent busy on the whole machine since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_quiet(max_wait_s: float, idle_share: float = 0.9, window_s: float = 10.0) -> float:
    """Wait until the machine's CPUs were at least ``idle_share`` idle over ``window_s``.

    Returns the busy share of the last window (other people's jobs skew timings).
    """
    deadline = time.time() + max_wait_s
    cores = os.cpu_count() or 1
    while True:
        before = _cpu_busy_seconds()
        time.sleep(window_s)
        after = _cpu_busy_seconds()
        if before is None or after is None:
            return float("nan")
        busy = (after - before) / (window_s * cores)
        if busy <= 1.0 - idle_share or time.time() >= deadline:
            return busy
        print(f"   waiting for a quiet machine (CPUs {busy:.0%} busy)", flush=True)


def run_arm(
    name: str,
    overrides: list[str],
    data_dir: Path,
    seed: int,
    work: Path,
    quiet_wait_s: float = 0.0,
) -> dict[str, Any]:
    scratch = work / name.replace(" ", "_").replace("/", "_")
    scratch.mkdir(parents=True, exist_ok=True)
    spec = {
        "arm": name,
        "overrides": overrides,
        "data": str(data_dir),
        "seed": seed,
        "scratch": str(scratch),
        "result": str(scratch / "result.json"),
    }
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("SCRCLF_RUN_ID", None)
    busy_before = wait_until_quiet(quiet_wait_s) if quiet_wait_s > 0 else None
    print(f"== {name} (load {os.getloadavg()[0]:.2f})", flush=True)
    machine_before, own_before, t0 = _cpu_busy_seconds(), _children_cpu_seconds(), time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"arm {name!r} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(Path(spec["result"]).read_text())
    # CPU used by anything other than this arm while it ran, as a share of all cores.
    machine_after = _cpu_busy_seconds()
    if machine_before is not None and machine_after is not None:
        foreign = (machine_after - machine_before) - (_children_cpu_seconds() - own_before)
        result["other_cpu_share"] = max(0.0, foreign) / (elapsed * (os.cpu_count() or 1))
    result["cpu_busy_before"] = busy_before
    print(
        f"   time to best {result['time_to_best_s']:.1f} s, wall {result['wall_time_s']:.1f} s, "
        f"{result['samples_per_second']:.1f} samples/s, test mean macro-F1 "
        f"{result['test_mean_macro_f1']:.3f}",
        flush=True,
    )
    return result


# ------------------------------------------------------------------------ components


class FixedItems(NamedTuple):
    """The default recipe's inputs (config composed with ``overrides``, threads set, data
    encoded, model built) and a fixed random sample of training items, also sorted by length.
    ``rng`` has drawn the sample and draws whatever a measurement orders at random next."""

    cfg: dict[str, Any]
    threads: int
    inputs: Any
    train: Any
    chosen: Any
    by_length: Any
    rng: Any


def fixed_items(data_dir: Path, items: int, overrides: Sequence[str] = ()) -> FixedItems:
    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from scrclf.training.hand_loop import TokenStore
    from scrclf.training.run import configure_threads, load_inputs

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"data.dir={data_dir}", "paths.output_dir=unused", *overrides],
        )
    cfg_dict = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    threads = configure_threads(cfg_dict["trainer"].get("num_threads"))
    inputs = load_inputs(cfg_dict, Path("unused"))
    train = TokenStore.from_dataset(inputs.datasets["train"], inputs.tasks)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(train), size=min(items, len(train)), replace=False)
    by_length = chosen[np.argsort(train.lengths[chosen], kind="stable")]
    return FixedItems(cfg_dict, threads, inputs, train, chosen, by_length, rng)


def measure_components(data_dir: Path, repeats: int = 3, items: int = 192) -> dict[str, Any]:
    """Per-part costs of a MiniLM training step on fixed items, each option timed in turn.

    * forward+backward per sample in fp32 and in bf16 autocast (batch 16, length-grouped);
    * forward+backward in bf16 with PyTorch's dropout masks against the masks of
      ``trainer.fast_dropout`` (scrclf.modeling.dropout);
    * the AdamW update: single-tensor (``adamw_torch`` on CPU) against fused;
    * forward+backward of the same items in random batches against length-sorted batches;
    * one evaluation pass over validation in random order against sorted by length.

    Options alternate within each repeat; the median over repeats is reported.
    """
    import numpy as np
    import torch

    from scrclf.modeling.dropout import fast_dropout
    from scrclf.training.hand_loop import TokenStore

    fixed = fixed_items(data_dir, items)
    threads, model, tasks = fixed.threads, fixed.inputs.model, fixed.inputs.tasks
    train, chosen, by_length, rng = fixed.train, fixed.chosen, fixed.by_length, fixed.rng
    valid = TokenStore.from_dataset(fixed.inputs.datasets["validation"], tasks)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
        return [order[i : i + size] for i in range(0, len(order), size)]

    def fwd_bwd(store, groups, bf16: bool) -> float:
        model.train()
        start = time.perf_counter()
        for idx in groups:
            batch = store.collate(idx, int(store.lengths[idx].max()))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def fwd_bwd_fast_dropout(store, groups) -> float:
        with fast_dropout(model):
            return fwd_bwd(store, groups, True)

    def optimizer_step(fused: bool, steps: int = 8) -> float:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            params, lr=1e-9, foreach=False if not fused else None, fused=True if fused else None
        )
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt.step()  # state allocation outside the timing
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        elapsed = (time.perf_counter() - start) / steps
        model.zero_grad(set_to_none=True)
        model.load_state_dict(initial)
        return elapsed

    params = [p for p in model.parameters() if p.requires_grad]
    # Learning rate 0: the updates run in full and leave the weights as they are.
    step_optimizer = torch.optim.AdamW(params, lr=0.0, fused=True)

    def full_step(groups) -> float:
        """Whole training steps as the default takes them: forward and backward in bf16
        with the cheaper dropout masks, gradient clipping at 1, the fused AdamW update."""
        model.train()
        with fast_dropout(model):
            start = time.perf_counter()
            for idx in groups:
                batch = store_batch(idx)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                step_optimizer.step()
                model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

    def store_batch(idx: np.ndarray):
        return train.collate(idx, int(train.lengths[idx].max()))

    # The attention probabilities' dropout modules: with their rate at 0, SDPA computes the
    # attention in one of its own CPU kernels instead of the math path dropout needs.
    attention_dropout = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Dropout) and name.endswith("attention.self.dropout")
    ]

    def step_variant(
        groups, word_embeddings: bool = False, attention_p: float | None = None
    ) -> float:
        """:func:`full_step` with the token embedding matrix held fixed (as
        ``trainer.freeze_word_embeddings``) and the attention dropout at ``attention_p``
        (None: as configured); both are put back afterwards."""
        matrix = model.encoder.get_input_embeddings().weight
        trained, rates = matrix.requires_grad, [module.p for module in attention_dropout]
        matrix.requires_grad_(not word_embeddings)
        if attention_p is not None:
            for module in attention_dropout:
                module.p = attention_p
        try:
            return full_step(groups)
        finally:
            matrix.requires_grad_(trained)
            for module, rate in zip(attention_dropout, rates, strict=True):
                module.p = rate

    full_step(batches(by_length, 16)[:1])  # the optimizer's state, outside the timing

    @torch.inference_mode()
    def eval_pass(order: np.ndarray) -> float:
        model.eval()
        start = time.perf_counter()
        for idx in batches(order, 64):
            batch = valid.collate(idx, int(valid.lengths[idx].max()))
            model(
                **{
                    k: v
                    for k, v in batch.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")
                }
            )
        return time.perf_counter() - start

    grouped, shuffled = batches(by_length, 16), batches(rng.permutation(chosen), 16)
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in [
            ("fwd_bwd_fp32_grouped_s", lambda: fwd_bwd(train, grouped, False)),
            ("fwd_bwd_bf16_grouped_s", lambda: fwd_bwd(train, grouped, True)),
            ("fwd_bwd_bf16_fast_dropout_s", lambda: fwd_bwd_fast_dropout(train, grouped)),
            ("fwd_bwd_fp32_random_s", lambda: fwd_bwd(train, shuffled, False)),
            ("adamw_single_tensor_step_s", lambda: optimizer_step(False)),
            ("adamw_fused_step_s", lambda: optimizer_step(True)),
            ("step_batch16_s", lambda: full_step(grouped)),
            ("step_batch8_s", lambda: full_step(batches(by_length, 8))),
            (
                "step_batch8_held_matrix_s",
                lambda: step_variant(batches(by_length, 8), word_embeddings=True),
            ),
            (
                "step_batch8_held_matrix_no_attention_dropout_s",
                lambda: step_variant(batches(by_length, 8), True, attention_p=0.0),
            ),
            ("eval_random_order_s", lambda: eval_pass(rng.permutation(len(valid)))),
            ("eval_sorted_s", lambda: eval_pass(np.argsort(valid.lengths, kind="stable"))),
        ]:
            samples.setdefault(name, []).append(fn())
    median = {k: float(np.median(v)) for k, v in samples.items()}
    n = len(chosen)
    padded = {
        "grouped": sum(len(b) * int(train.lengths[b].max()) for b in grouped),
        "random": sum(len(b) * int(train.lengths[b].max()) for b in shuffled),
        "real": int(train.lengths[chosen].sum()),
    }
    return {
        "threads": threads,
        "items": n,
        "repeats": repeats,
        "seconds": median,
        "all": samples,
        "per_sample_ms": {k: 1000 * median[k] / n for k in median if k.startswith("fwd_bwd")},
        "padding_share": {k: 1 - padded["real"] / padded[k] for k in ("grouped", "random")},
        "ratios": {
            "bf16_speedup": median["fwd_bwd_fp32_grouped_s"] / median["fwd_bwd_bf16_grouped_s"],
            "fast_dropout_speedup": median["fwd_bwd_bf16_grouped_s"]
            / median["fwd_bwd_bf16_fast_dropout_s"],
            "grouping_speedup": median["fwd_bwd_fp32_random_s"] / median["fwd_bwd_fp32_grouped_s"],
            "fused_adamw_speedup": median["adamw_single_tensor_step_s"]
            / median["adamw_fused_step_s"],
            "sorted_eval_speedup": median["eval_random_order_s"] / median["eval_sorted_s"],
            "batch8_cost": median["step_batch8_s"] / median["step_batch16_s"],
            "held_matrix_speedup": median["step_batch8_s"] / median["step_batch8_held_matrix_s"],
            "no_attention_dropout_speedup": median["step_batch8_held_matrix_s"]
            / median["step_batch8_held_matrix_no_attention_dropout_s"],
        },
        "attention_dropout_sites": len(attention_dropout),
    }


def components_markdown(report: dict[str, Any]) -> str:
    c = report["components"]
    s, r = c["seconds"], c["ratios"]
    return "\n".join(
        [
            f"# Training step components ({report['machine']['cpu']}, {c['threads']} threads)",
            "",
            f"Measured {report['measured_at']} with `{report['command']}`: {c['items']} training "
            f"items, median of {c['repeats']} alternating repeats.",
            "",
            "| part | option A | option B | A / B |",
            "|---|---:|---:|---:|",
            f"| forward+backward, {c['items']} items, batch 16 | fp32 {s['fwd_bwd_fp32_grouped_s']:.2f} s "
            f"| bf16 autocast {s['fwd_bwd_bf16_grouped_s']:.2f} s | {r['bf16_speedup']:.2f}x |",
            f"| forward+backward, bf16 autocast, batch 16 | PyTorch's dropout masks "
            f"{s['fwd_bwd_bf16_grouped_s']:.2f} s | masks from 64-bit words "
            f"{s['fwd_bwd_bf16_fast_dropout_s']:.2f} s | {r['fast_dropout_speedup']:.2f}x |",
            f"| forward+backward, fp32, batch 16 | random batches {s['fwd_bwd_fp32_random_s']:.2f} s "
            f"(padding {c['padding_share']['random']:.0%}) | length-grouped "
            f"{s['fwd_bwd_fp32_grouped_s']:.2f} s (padding {c['padding_share']['grouped']:.0%}) "
            f"| {r['grouping_speedup']:.2f}x |",
            f"| AdamW update, all parameters | single-tensor {1000 * s['adamw_single_tensor_step_s']:.0f} ms "
            f"| fused {1000 * s['adamw_fused_step_s']:.0f} ms | {r['fused_adamw_speedup']:.2f}x |",
            f"| evaluation pass over validation, batch 64 | random order {s['eval_random_order_s']:.2f} s "
            f"| sorted by length {s['eval_sorted_s']:.2f} s | {r['sorted_eval_speedup']:.2f}x |",
            f"| whole training steps over the {c['items']} items (bf16, masks from 64-bit words, "
            f"clipping, fused AdamW) | batches of 8 {s['step_batch8_s']:.2f} s | batches of 16 "
            f"{s['step_batch16_s']:.2f} s | {r['batch8_cost']:.2f}x |",
            f"| whole training steps, batches of 8 | token embedding matrix trained "
            f"{s['step_batch8_s']:.2f} s | held fixed {s['step_batch8_held_matrix_s']:.2f} s "
            f"| {r['held_matrix_speedup']:.2f}x |",
            f"| whole training steps, batches of 8, matrix held fixed | attention dropout "
            f"(the math path, masks from 64-bit words) {s['step_batch8_held_matrix_s']:.2f} s "
            f"| no attention dropout (SDPA's own kernel, {c['attention_dropout_sites']} layers) "
            f"{s['step_batch8_held_matrix_no_attention_dropout_s']:.2f} s "
            f"| {r['no_attention_dropout_speedup']:.2f}x |",
            "",
        ]
    )


# ----------------------------------------------------------------------------- heads

# The head settings timed by --heads: (name, label_attention, label_attention_keys).
HEAD_SETTINGS = (
    ("linear", None, "per_task"),
    ("attending, own projections", ["themes", "evidence", "action_strength"], "per_task"),
    ("attending, one shared projection", ["themes", "evidence", "action_strength"], "shared"),
    ("attending, token states", ["themes", "evidence", "action_strength"], "tokens"),
)


def measure_heads(
    data_dir: Path, repeats: int = 3, items: int = 192, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Cost of a training step (forward, backward, fused AdamW update) with each head setting
    in HEAD_SETTINGS, on the same items in the same length-grouped batches of 16, at the
    precision the default recipe trains in on this machine. The models share the default's
    encoder weights and fitted wide part; settings alternate within each repeat and the
    median over repeats is reported. ``overrides`` apply to the training config (a test
    uses the tiny model)."""
    import copy

    import numpy as np
    import torch

    from scrclf.modeling.model import ScrClfModel
    from scrclf.training.run import resolve_precision

    fixed = fixed_items(data_dir, items, overrides)
    cfg_dict, threads, base = fixed.cfg, fixed.threads, fixed.inputs.model
    train, chosen, by_length = fixed.train, fixed.chosen, fixed.by_length
    precision = resolve_precision(str(cfg_dict["trainer"]["precision"]), "cpu")
    groups = [by_length[i : i + 16] for i in range(0, len(by_length), 16)]
    models = {}
    for name, attending, keys in HEAD_SETTINGS:
        config = copy.deepcopy(base.config)
        config.label_attention, config.label_attention_keys = attending, keys
        torch.manual_seed(0)
        model = ScrClfModel(config, encoder=copy.deepcopy(base.encoder))
        model.load_state_dict(base.state_dict(), strict=False)  # encoder and wide part
        groups_ = model.param_groups(float(cfg_dict["trainer"]["learning_rate"]), 0.01)
        models[name] = (model, torch.optim.AdamW(groups_, lr=1e-9, fused=True))

    def step(name: str) -> float:
        model, opt = models[name]
        model.train()
        start = time.perf_counter()
        for idx in groups:
            batch = train.collate(idx, int(train.lengths[idx].max()))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in models:  # warm-up: optimizer state, first-call allocations
        step(name)
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name in models:
            samples.setdefault(name, []).append(step(name))
    median = {k: float(np.median(v)) for k, v in samples.items()}
    linear = median[HEAD_SETTINGS[0][0]]
    return {
        "threads": threads,
        "precision": precision,
        "items": len(chosen),
        "repeats": repeats,
        "seconds": median,
        "all": samples,
        "parameters": {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()},
        "relative_to_linear": {k: v / linear for k, v in median.items()},
    }


def heads_markdown(report: dict[str, Any]) -> str:
    h = report["heads"]
    lines = [
        f"# Training step cost by head ({report['machine']['cpu']}, {h['threads']} threads, "
        f"{h['precision']})",
        "",
        f"Measured {report['measured_at']} with `{report['command']}`: {h['items']} training "
        f"items in length-grouped batches of 16 (forward, backward, fused AdamW update), "
        f"median of {h['repeats']} alternating repeats after a warm-up pass. Load average "
        f"{report['load_before']:.2f} before, {report['load_after']:.2f} after.",
        "",
        "| heads | seconds | per item (ms) | relative to linear | parameters |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds in h["seconds"].items():
        lines.append(
            f"| {name} | {seconds:.2f} | {1000 * seconds / h['items']:.1f} "
            f"| {h['relative_to_linear'][name]:.3f} | {h['parameters'][name]:,} |"
        )
    return "\n".join([*lines, ""])


# ---------------------------------------------------------------------------- report


def limited_copy(data_dir: Path, limit: int, dest: Path) -> Path:
    """The first ``limit`` items of each split, for a quick check of the benchmark itself."""
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        lines = (data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (dest / f"{split}.jsonl").write_text("\n".join(lines[:limit]) + "\n", encoding="utf-8")
    return dest


def with_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref = next((r for r in results if r["kind"] == "reference"), None)
    for r in results:
        if ref is None or r is ref:
            continue
        r["vs_reference"] = {
            "time_to_best_speedup": ref["time_to_best_s"] / r["time_to_best_s"],
            "wall_time_speedup": ref["wall_time_s"] / r["wall_time_s"],
            "samples_per_second_ratio": r["samples_per_second"] / ref["samples_per_second"],
            "tokens_per_second_ratio": r["tokens_per_second"] / ref["tokens_per_second"],
            "test_mean_macro_f1_delta": r["test_mean_macro_f1"] - ref["test_mean_macro_f1"],
            "test_macro_f1_delta": {
                k: r["test_macro_f1"][k] - ref["test_macro_f1"][k] for k in TASKS
            },
        }
    return results


def markdown(report: dict[str, Any]) -> str:
    rows = report["arms"]
    lines = [
        f"# Training speed and quality ({report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores{', ' + report['machine']['gpu'] if report['machine']['gpu'] else ''})",
        "",
        f"Measured {report['measured_at']} with `{report['command']}`.",
        "",
        "| arm | time to best (s) | wall (s) | samples/s | tokens/s | peak RSS (MiB) | "
        "themes | evidence | action_strength | mean | load before/after | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f1 = r["test_macro_f1"]
        lines.append(
            f"| {r['name']} | {r['time_to_best_s']:.0f} | {r['wall_time_s']:.0f} | "
            f"{r['samples_per_second']:.1f} | {r['tokens_per_second']:.0f} | "
            f"{r['peak_rss_mib']:.0f} | {f1['themes']:.3f} | {f1['evidence']:.3f} | "
            f"{f1['action_strength']:.3f} | {r['test_mean_macro_f1']:.3f} | "
            f"{r['load_before']:.2f}/{r['load_after']:.2f} | {r.get('other_cpu_share', float('nan')):.0%} |"
        )
    ratios = [r for r in rows if "vs_reference" in r]
    if ratios:
        lines += [
            "",
            "| arm | speed-up to best | wall speed-up | samples/s ratio | "
            "Δ mean macro-F1 | Δ themes | Δ evidence | Δ action_strength |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ratios:
            v = r["vs_reference"]
            d = v["test_macro_f1_delta"]
            lines.append(
                f"| {r['name']} | {v['time_to_best_speedup']:.2f}x | "
                f"{v['wall_time_speedup']:.2f}x | {v['samples_per_second_ratio']:.2f}x | "
                f"{v['test_mean_macro_f1_delta']:+.3f} | {d['themes']:+.3f} | "
                f"{d['evidence']:+.3f} | {d['action_strength']:+.3f} |"
            )
    lines += [
        "",
        "Other CPU: the share of all cores used by other processes while the arm ran "
        "(timings are comparable when it is near 0%). "
        "Test macro-F1: scrclf at its calibrated decisions; the reference at argmax "
        "(single-label) and sigmoid >= 0.5 (multi-label). The reference is three "
        "fine-tunes (one per task); its times are their sum. Throughput counts optimizer "
        "steps only; one scrclf sample trains all three heads.",
        "",
    ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from scrclf.training.run import cpu_name

    cpu = cpu_name()
    import torch

    from scrclf.training.run import cpu_has_native_bf16, physical_cores

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "native_bf16": cpu_has_native_bf16(),
        "cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"--arm takes NAME=OVERRIDES, got {text!r}")
    return name, overrides.split()


def recorded_command(args: list[str]) -> str:
    """The command line as results record it: scratch and output folders are left out,
    since they name places on the measuring machine and do not change the figures."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--work", "--out"):
            skip = True
            continue
        if arg.startswith(("--work=", "--out=")):
            continue
        kept.append(arg)
    return " ".join(["python", "benchmarks/train_speed.py", *kept])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--arms",
        default="reference,default",
        help="comma-separated arm names: reference, default, or names given by --arm",
    )
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        type=parse_arm,
        metavar="NAME=OVERRIDES",
        help="a named arm: space-separated Hydra overrides",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="run the ablation ladder (ABLATION in this file) instead of --arms",
    )
    parser.add_argument(
        "--components",
        action="store_true",
        help="time the parts of a training step instead (see measure_components)",
    )
    parser.add_argument(
        "--heads",
        action="store_true",
        help="time a training step with each head setting instead (see measure_heads)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats for --components and --heads"
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "scr_recs")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="keep only the first N items of each split (checks the script)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default=None, help="suffix of the output file names")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the arms' run folders here (default: a temporary folder)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each arm, wait up to this long for idle CPUs",
    )
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return

    named = dict(args.arm)
    named.setdefault("default", [])
    if args.ablation:
        plan = list(ABLATION)
    else:
        plan = []
        for name in [a.strip() for a in args.arms.split(",") if a.strip()]:
            if name != "reference" and name not in named:
                parser.error(f"unknown arm {name!r}; define it with --arm {name}=OVERRIDES")
            plan.append((name, named.get(name, [])))

    if args.heads or args.components:
        key, measure, render = (
            ("heads", measure_heads, heads_markdown)
            if args.heads
            else ("components", measure_components, components_markdown)
        )
        report = {
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": recorded_command(argv or sys.argv[1:]),
            "machine": machine(),
            "load_before": os.getloadavg()[0],
            key: measure(args.data, args.repeats),
        }
        report["load_after"] = os.getloadavg()[0]
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"train_speed_{key}" + (f"_{args.tag}" if args.tag else "")
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
        (args.out / f"{stem}.md").write_text(render(report))
        print(render(report))
        return

    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        work = args.work or Path(tmp)
        data_dir = limited_copy(args.data, args.limit, work / "data") if args.limit else args.data
        results = [
            run_arm(name, overrides, data_dir, args.seed, work, args.wait_quiet)
            for name, overrides in plan
        ]
    report = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": recorded_command(argv or sys.argv[1:]),
        "machine": machine(),
        "data": {"limit": args.limit, "seed": args.seed},
        "arms": with_ratios(results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "train_speed" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
