"""onnxruntime CPU kernels that the int8 graph avoids, timed against what replaces them.

    python benchmarks/ort_kernels.py                # MiniLM shapes: batch 32, 110 tokens
    python benchmarks/ort_kernels.py --threads 2 --batch 8

Times, on random inputs of the encoder's shapes, single-node graphs run by onnxruntime:
  * residual + LayerNorm: the fused ``SkipLayerNormalization`` (what onnxruntime's
    ``SkipLayerNormFusion`` makes of ``Add`` + ``LayerNormalization`` when it loads a
    graph) against the two standard operators with that fusion disabled;
  * bias + GELU: the fused ``BiasGelu`` against the decomposed erf form.
The results decided two settings: scrclf loads ONNX graphs with ``SkipLayerNormFusion``
disabled, and the int8 graph is built without fusing residual + LayerNorm
(``src/scrclf/quantization.py``). Writes ``ort_kernels.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _model(nodes, inputs, initializers):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "kernel",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
            for n, a in inputs.items()
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def cases(batch: int, tokens: int, hidden: int, intermediate: int) -> dict[str, tuple]:
    """name -> (serialized model, inputs, optimizers to disable)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, tokens, hidden), dtype=np.float32)
    r = rng.standard_normal((batch, tokens, hidden), dtype=np.float32)
    ln = {"gamma": np.ones(hidden, np.float32), "beta": np.zeros(hidden, np.float32)}
    skip = _model(
        [
            helper.make_node(
                "SkipLayerNormalization",
                ["x", "r", "gamma", "beta"],
                ["y"],
                domain="com.microsoft",
                epsilon=1e-12,
            )
        ],
        {"x": x, "r": r},
        ln,
    )
    add_ln = _model(
        [
            helper.make_node("Add", ["x", "r"], ["s"]),
            helper.make_node(
                "LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12
            ),
        ],
        {"x": x, "r": r},
        ln,
    )
    h = rng.standard_normal((batch, tokens, intermediate), dtype=np.float32)
    consts = {
        "bias": np.zeros(intermediate, np.float32),
        "sqrt2": np.array(2**0.5, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    bias_gelu = _model(
        [helper.make_node("BiasGelu", ["x", "bias"], ["y"], domain="com.microsoft")],
        {"x": h},
        {"bias": consts["bias"]},
    )
    erf_gelu = _model(
        [
            helper.make_node("Add", ["x", "bias"], ["a"]),
            helper.make_node("Div", ["a", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["f"]),
            helper.make_node("Mul", ["a", "f"], ["g"]),
            helper.make_node("Mul", ["g", "half"], ["y"]),
        ],
        {"x": h},
        consts,
    )
    return {
        "SkipLayerNormalization (fused)": (skip, {"x": x, "r": r}, []),
        "Add + LayerNormalization, SkipLayerNormFusion disabled": (
            add_ln,
            {"x": x, "r": r},
            ["SkipLayerNormFusion"],
        ),
        "BiasGelu (fused)": (bias_gelu, {"x": h}, []),
        "Add + erf GELU, GELU fusions disabled": (
            erf_gelu,
            {"x": h},
            ["BiasGeluFusion", "GeluFusion"],
        ),
    }


def time_case(model: bytes, feed: dict, disabled: list[str], threads: int, repeats: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=110)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import onnxruntime

    rows = []
    for name, (model, feed, disabled) in cases(
        args.batch, args.tokens, args.hidden, args.intermediate
    ).items():
        rows.append(
            {
                "kernel": name,
                "median_ms": time_case(model, feed, disabled, args.threads, args.repeats),
            }
        )
    by_name = {r["kernel"]: r["median_ms"] for r in rows}
    ratios = {
        "SkipLayerNormalization / (Add + LayerNormalization)": by_name[
            "SkipLayerNormalization (fused)"
        ]
        / by_name["Add + LayerNormalization, SkipLayerNormFusion disabled"],
        "BiasGelu / (Add + erf GELU)": by_name["BiasGelu (fused)"]
        / by_name["Add + erf GELU, GELU fusions disabled"],
    }
    from scrclf import atomic

    result = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "onnxruntime": onnxruntime.__version__,
        "cpu_count": os.cpu_count(),
        "shapes": {
            "batch": args.batch,
            "tokens": args.tokens,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
        },
        "threads": args.threads,
        "repeats": args.repeats,
        "kernels": rows,
        "ratios": ratios,
    }
    lines = [
        "# onnxruntime CPU kernels",
        "",
        f"onnxruntime {result['onnxruntime']}, {args.threads} thread(s), batch "
        f"{args.batch} x {args.tokens} tokens, hidden {args.hidden}, intermediate "
        f"{args.intermediate}; median of {args.repeats} runs; measured "
        f"{result['measured_at']}.",
        "",
        "| kernel | median (ms) |",
        "|---|---:|",
    ]
    lines += [f"| {r['kernel']} | {r['median_ms']:.2f} |" for r in rows]
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in ratios.items()]
    text = "\n".join(lines) + "\n"
    atomic.write_json(args.out / "ort_kernels.json", result)
    atomic.write_text(args.out / "ort_kernels.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
