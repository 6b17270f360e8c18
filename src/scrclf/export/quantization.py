"""The int8 ONNX graph: a graph built for onnxruntime, smoothed, then quantized per token.

Each item's labels must not depend on the items batched with it. Dynamic int8 quantization
(``quantize_dynamic``) computes one activation scale per tensor at run time, over the whole
batch padding included, so a text's logits moved with its neighbours and with the batch's
padded length. Static quantization (``quantize_static``, scales calibrated once) is
batch-independent too, but one fixed scale per tensor cannot follow the heavy-tailed inputs
of the attention output and GELU projections: quantizing those moved the theme decisions of
the default model on 28% of validation items, and leaving them fp32 left int8 at 1.5x
torch's throughput. Here every matrix product with a weight is quantized **per token**: each
row of the activation (one token of one item) gets its own scale, ``max|x_row| / 127``,
computed from that row alone, so an item's results cannot depend on other rows, and no
single large token coarsens the others. Weights are int8 with one scale per output column.

A few input channels of a transformer's hidden states carry values many times larger than
the rest, which coarsens every token's scale. The graph is therefore built in four steps:

1. **export for onnxruntime**: the model with plain ("eager") attention through the
   TorchScript exporter, whose graph onnxruntime's transformer optimizer recognises;
2. **fusion** (``onnxruntime.transformers.optimizer``): embedding + LayerNorm and bias +
   GELU become single onnxruntime operators (residual + LayerNorm does not: that fused kernel
   is slower on CPU). Self-attention stays plain operators unless ``fuse_attention`` is set:
   onnxruntime's fused ``Attention`` runs its query, key and value projections in fp32, a
   quarter of the encoder's weight products, which held int8 to 1.7x torch's throughput.
   The fused graph is kept only where its fp32 outputs match the unfused graph's;
3. **smoothing** (the activation-smoothing idea of "SmoothQuant: Accurate and Efficient
   Post-Training Quantization for Large Language Models", Xiao et al., 2023): for every
   tensor that feeds weight matrices, per-channel scales ``s_j = max|x_j|^alpha /
   max|w_j|^(1 - alpha)`` measured on calibration text divide the activation (one ``Mul``)
   and multiply the matching weight rows, which leaves the fp32 function unchanged and moves
   the outliers into weights, where per-column scales absorb them;
4. **per-token int8** (:func:`quantize_per_token`): each ``MatMul`` with a 2-D weight
   becomes onnxruntime's ``MatMulIntegerToFloat`` on uint8 activations (symmetric per-token
   scale, zero point 128) and int8 weights, which applies the per-column weight scales as it
   writes its output; one ``Mul`` applies the per-token scales. GELU outputs, bounded below,
   span each token's own range instead (the offset comes back through the weights' column
   sums). An activation that feeds several weights (query, key and value) is quantized once.

The result runs on onnxruntime (the fused operators are in its ``com.microsoft`` domain);
``onnx/model.onnx`` stays a standard-operator fp32 graph.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.errors import SettingsError
from scrclf.export.onnx import example_inputs, logits_module, quiet_exporters
from scrclf.inference.classifier import INPUT_NAMES, OUTPUT_PREFIX
from scrclf.settings import QuantizationSettings

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 32
# Operators whose input 1 is a weight matrix [in, out] applied to input 0.
WEIGHTED_OPS = ("MatMul", "Attention")
# A fused graph must reproduce the unfused one's logits to within this.
FUSION_TOLERANCE = 1e-3


def _session(model: Any, optimize: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _feed(session, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: batch[n] if n in batch else np.zeros_like(batch["input_ids"]) for n in names}


def _logits(session, batches: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    outs = [o.name for o in session.get_outputs() if o.name.startswith(OUTPUT_PREFIX)]
    per_batch = [session.run(outs, _feed(session, b)) for b in batches]
    return [np.concatenate([p[i] for p in per_batch]) for i in range(len(outs))]


# ------------------------------------------------------------------- 1. export


def export_for_runtime(model, path: str | Path, opset: int = 17) -> None:
    """Write ``model`` (an ``ScrClfModel``) as an fp32 graph for onnxruntime's optimizer:
    eager attention, TorchScript exporter, dynamic batch and sequence axes."""
    import torch

    model = copy.deepcopy(model).to("cpu").eval()
    encoder = getattr(model, "encoder", model)
    if hasattr(encoder, "set_attn_implementation"):
        with contextlib.suppress(Exception):  # encoders without eager attention keep theirs
            encoder.set_attn_implementation("eager")
    input_ids, attention_mask, token_type_ids = example_inputs()
    outputs = [OUTPUT_PREFIX + name for name in model.task_names]
    with quiet_exporters("torch.onnx", "torch.jit"), torch.no_grad():
        torch.onnx.export(
            logits_module(model),
            (input_ids, attention_mask, token_type_ids),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=outputs,
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES},
            opset_version=int(opset),
            dynamo=False,
        )


# ------------------------------------------------------------------- 2. fusion


def fuse(
    src: str | Path,
    dst: str | Path,
    num_heads: int,
    hidden_size: int,
    check_batches: Sequence[Mapping[str, np.ndarray]],
    attention: bool = True,
) -> dict[str, int] | None:
    """Fuse transformer operators; returns the fused-operator counts, or None (and writes
    nothing) when the optimizer fails, fuses nothing, or changes the logits. With
    ``attention`` off, self-attention stays plain operators, so that its query, key and value
    projections remain ``MatMul`` nodes that can be quantized."""
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        # Residual + LayerNorm stay two operators: onnxruntime's SkipLayerNormalization CPU
        # kernel measured 6x slower than Add + LayerNormalization (benchmarks/README.md).
        options.enable_skip_layer_norm = False
        options.enable_attention = bool(attention)
        with quiet_exporters("onnxruntime", "onnxruntime.transformers", "root"):
            fused = optimize_model(
                str(src),
                model_type="bert",
                num_heads=int(num_heads),
                hidden_size=int(hidden_size),
                optimization_options=options,
            )
            counts = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
            data = fused.model.SerializeToString()
    except Exception as err:  # the optimizer raises assorted errors on graphs it cannot read
        logger.info("transformer fusion skipped: %s", err)
        return None
    if not counts:
        return None
    if check_batches:
        ref = _logits(_session(src), check_batches)
        got = _logits(_session(data), check_batches)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got, strict=True))
        if not diff <= FUSION_TOLERANCE:
            logger.info("transformer fusion skipped: logits moved by %.3g", diff)
            return None
    Path(dst).write_bytes(data)
    return counts


# ------------------------------------------------------------------- 3. smoothing


def _weighted_groups(graph, initializers: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Activation tensor name -> the nodes that multiply it by a 2-D weight initializer."""
    groups: dict[str, list[Any]] = collections.defaultdict(list)
    for node in graph.node:
        if (
            node.op_type in WEIGHTED_OPS
            and len(node.input) > 1
            and node.input[1] in initializers
            and len(initializers[node.input[1]].dims) == 2
        ):
            groups[node.input[0]].append(node)
    return dict(groups)


def activation_ranges(
    model_path: str | Path, names: Sequence[str], batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |value| of each named tensor over the calibration batches."""
    import onnx
    from onnx import TensorProto, helper

    probe = onnx.load(str(model_path))
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = _session(probe.SerializeToString())
    ranges: dict[str, np.ndarray] = {}
    for batch in batches:
        values = session.run(list(names), _feed(session, batch))
        for name, value in zip(names, values, strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def _topological(nodes: Sequence[Any], available: set[str]) -> list[Any]:
    ordered, pending = [], list(nodes)
    while pending:
        rest = []
        for node in pending:
            if all(not name or name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("the graph has a cycle or an undefined input")
        pending = rest
    return ordered


def smooth(
    src: str | Path, dst: str | Path, batches: Sequence[Mapping[str, np.ndarray]], alpha: float
) -> int:
    """Write ``src`` with SmoothQuant scaling applied; returns how many activations were
    smoothed. The fp32 function is unchanged up to rounding."""
    import onnx
    from onnx import helper, numpy_helper

    if not 0.0 <= alpha <= 1.0:
        raise SettingsError(f"smooth_alpha must lie in [0, 1], got {alpha}")
    model = onnx.load(str(src))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    groups = _weighted_groups(graph, initializers)
    ranges = activation_ranges(src, list(groups), batches)
    smoothed_count = 0
    for index, (name, nodes) in enumerate(groups.items()):
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        if len({w.shape[0] for w in weights}) != 1 or weights[0].shape[0] != ranges[name].size:
            continue
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = (
            np.maximum(ranges[name], 1e-5) ** alpha / np.maximum(weight_peak, 1e-5) ** (1.0 - alpha)
        ).astype(np.float32)
        for node, weight in zip(nodes, weights, strict=True):
            init = initializers[node.input[1]]
            init.CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(weight.dtype), init.name)
            )
        inverse = f"smooth_{index}_inverse_scale"
        smoothed = f"smooth_{index}_input"
        graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        graph.node.append(
            helper.make_node("Mul", [name, inverse], [smoothed], name=f"smooth_{index}")
        )
        for node in nodes:
            node.input[0] = smoothed
        smoothed_count += 1
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    ordered = _topological(list(graph.node), available)
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.save(model, str(dst))
    return smoothed_count


# ------------------------------------------------------------------- 4. all steps


def calibration_batches(
    clf,
    texts: Sequence[str],
    findings: Sequence[str | None] | None,
    items: int = 256,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Up to ``items`` texts drawn at random (fixed seed), tokenized as ``clf`` tokenizes
    them and padded in batches of 32."""
    order = sorted(np.random.default_rng(seed).permutation(len(texts))[: max(0, int(items))])
    chosen = [texts[i] for i in order]
    pairs = [findings[i] for i in order] if findings is not None else None
    if not chosen:
        return []
    enc, _ = clf.encode(chosen, pairs)
    return [
        clf.pad(enc, list(range(i, min(i + CALIBRATION_BATCH, len(chosen)))))
        for i in range(0, len(chosen), CALIBRATION_BATCH)
    ]


def build_int8_graph(
    model,
    dst: str | Path,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    smooth_alpha: float | None | str = "shipped",
    fuse_operators: bool | None = None,
    fuse_attention: bool | None = None,
) -> dict[str, Any]:
    """Write the int8 graph of ``model`` to ``dst`` and describe how it was made.

    Args:
        model: the ``ScrClfModel`` to quantize.
        dst: the ``.onnx`` file to write.
        calibration: padded int64 batches (``input_ids``, ``attention_mask``,
            ``token_type_ids``) of calibration text, which set the smoothing scales;
            without them the graph is not smoothed (quantized per token all the same).
        smooth_alpha: SmoothQuant's migration strength (0: none, 1: all of the activation
            range into the weights); None turns smoothing off; by default
            ``quantization.smooth_alpha`` of the shipped ``configs/export.yaml``.
        fuse_operators: apply onnxruntime's transformer fusion; by default
            ``quantization.fuse`` of the shipped ``configs/export.yaml``.
        fuse_attention: let that fusion turn self-attention into onnxruntime's
            ``Attention`` operator, whose projections then stay fp32; by default
            ``quantization.fuse_attention``.
    """
    if smooth_alpha == "shipped" or fuse_operators is None or fuse_attention is None:
        shipped = QuantizationSettings.defaults()
        if fuse_attention is None:
            fuse_attention = shipped.fuse_attention
        if smooth_alpha == "shipped":
            smooth_alpha = shipped.smooth_alpha
        if fuse_operators is None:
            fuse_operators = shipped.fuse

    calibration = list(calibration or [])
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scrclf_int8_") as tmp:
        current = Path(tmp) / "export.onnx"
        export_for_runtime(model, current)
        info["graph"] = "TorchScript export, eager attention"
        if fuse_operators:
            config = getattr(getattr(model, "encoder", model), "config", None)
            heads = getattr(config, "num_attention_heads", 0)
            hidden = getattr(config, "hidden_size", 0)
            fused = Path(tmp) / "fused.onnx"
            counts = (
                fuse(current, fused, heads, hidden, calibration[:2], attention=fuse_attention)
                if heads
                else None
            )
            info["fused_operators"] = counts
            if counts:
                current = fused
        if smooth_alpha is not None and calibration:
            smoothed = Path(tmp) / "smoothed.onnx"
            count = smooth(current, smoothed, calibration, float(smooth_alpha))
            info["smoothing"] = {
                "method": "SmoothQuant",
                "alpha": float(smooth_alpha),
                "activations_smoothed": count,
                "calibration_items": int(sum(len(b["input_ids"]) for b in calibration)),
            }
            current = smoothed
        else:
            info["smoothing"] = None
        info.update(quantize_per_token(current, dst))
    return info


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def _gelu_outputs(graph) -> set[str]:
    """Tensors that are GELU outputs, directly or through a smoothing ``Mul``: bounded below
    by about -0.17 (times the smoothing scale), so they are quantized one-sided."""
    producer = {out: node for node in graph.node for out in node.output}
    found = set()
    for name, node in producer.items():
        if node.op_type in GELU_OPS:
            found.add(name)
        elif node.op_type == "Mul" and node.name.startswith("smooth_"):
            source = producer.get(node.input[0])
            if source is not None and source.op_type in GELU_OPS:
                found.add(name)
    return found


def _symmetric_rows(helper, x: str, q: str) -> list[Any]:
    """uint8 ``q + "uint8"`` of ``x`` with one scale per row, ``max|row| / 127``, around zero
    point 128, and the scales as ``q + "scale"``."""
    # q = round(x / scale) in [-127, 127], stored as q + 128 by QuantizeLinear (scale 1, zero
    # point 128: rounds, shifts and casts in one operator).
    return [
        helper.make_node("Abs", [x], [q + "abs"]),
        helper.make_node("ReduceMax", [q + "abs"], [q + "peak"], axes=[-1], keepdims=1),
        helper.make_node("Max", [q + "peak", "int8_eps"], [q + "peak_pos"]),
        helper.make_node("Div", [q + "peak_pos", "int8_127"], [q + "scale"]),
        helper.make_node("Div", ["int8_127", q + "peak_pos"], [q + "inverse"]),
        helper.make_node("Mul", [x, q + "inverse"], [q + "scaled"]),
        helper.make_node(
            "QuantizeLinear", [q + "scaled", "int8_one", "int8_zero_point"], [q + "uint8"]
        ),
    ]


def _asymmetric_rows(helper, x: str, q: str) -> list[Any]:
    """uint8 ``q + "uint8"`` of ``x`` spanning each row's range (0 included) in 255 steps:
    ``x = q * scale + low``, with ``q + "scale"`` and ``q + "low"`` per row. For one-sided
    activations this halves the step of the symmetric form."""
    return [
        helper.make_node("ReduceMin", [x], [q + "min"], axes=[-1], keepdims=1),
        helper.make_node("ReduceMax", [x], [q + "max"], axes=[-1], keepdims=1),
        helper.make_node("Min", [q + "min", "int8_fzero"], [q + "low"]),
        helper.make_node("Max", [q + "max", "int8_fzero"], [q + "high"]),
        helper.make_node("Sub", [q + "high", q + "low"], [q + "range"]),
        helper.make_node("Max", [q + "range", "int8_eps"], [q + "range_pos"]),
        helper.make_node("Div", [q + "range_pos", "int8_255"], [q + "scale"]),
        helper.make_node("Div", ["int8_255", q + "range_pos"], [q + "inverse"]),
        helper.make_node("Sub", [x, q + "low"], [q + "shifted"]),
        helper.make_node("Mul", [q + "shifted", q + "inverse"], [q + "scaled"]),
        helper.make_node("QuantizeLinear", [q + "scaled", "int8_one", "int8_zero"], [q + "uint8"]),
    ]


def quantize_per_token(
    src: str | Path, dst: str | Path, keep: Callable[[int], bool] | None = None
) -> dict[str, Any]:
    """Write ``src`` with every ``MatMul`` by a 2-D weight initializer quantized to int8 per
    token (activation rows) and per output column (weights); returns its description.
    ``keep(i)`` true leaves the ``i``-th such ``MatMul`` (in graph order) in fp32."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    constants: dict[str, np.ndarray] = {
        "int8_eps": np.array(1e-12, dtype=np.float32),
        "int8_127": np.array(127.0, dtype=np.float32),
        "int8_one": np.array(1.0, dtype=np.float32),
        "int8_zero_point": np.array(128, dtype=np.uint8),
        "int8_weight_zero_point": np.array(0, dtype=np.int8),
        "int8_zero": np.array(0, dtype=np.uint8),
        "int8_255": np.array(255.0, dtype=np.float32),
        "int8_fzero": np.array(0.0, dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    nodes, count = [], 0
    quantized: dict[str, str] = {}  # activation -> prefix of its quantized form
    one_sided = _gelu_outputs(graph)
    seen = 0
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        seen += 1
        if keep is not None and keep(seen - 1):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        w_int8 = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        p = f"int8_{count}_"
        graph.initializer.extend(
            [
                numpy_helper.from_array(w_int8, p + "weight"),
                numpy_helper.from_array(w_scale, p + "weight_scale"),
            ]
        )
        x = node.input[0]
        if x not in quantized:
            q = f"int8_in{len(quantized)}_"
            if x in one_sided:
                nodes += _asymmetric_rows(helper, x, q)
            else:
                nodes += _symmetric_rows(helper, x, q)
            quantized[x] = q
        q = quantized[x]
        # onnxruntime's MatMulIntegerToFloat multiplies the int32 products by the per-column
        # weight scales as it writes them; the per-token scale follows in one Mul.
        zero = "int8_zero" if x in one_sided else "int8_zero_point"
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [
                    q + "uint8",
                    p + "weight",
                    "int8_one",
                    p + "weight_scale",
                    zero,
                    "int8_weight_zero_point",
                ],
                [p + "rescaled"],
                domain="com.microsoft",
            )
        ]
        if x in one_sided:
            # x = q * scale + low per row, so x @ W = scale * (q @ W) + low * (column sums of W).
            sums = (w_int8.astype(np.float32) * w_scale).sum(axis=0).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(sums, p + "column_sums"))
            nodes += [
                helper.make_node("Mul", [p + "rescaled", q + "scale"], [p + "scaled"]),
                helper.make_node("Mul", [q + "low", p + "column_sums"], [p + "offset"]),
                helper.make_node("Add", [p + "scaled", p + "offset"], [node.output[0]]),
            ]
        else:
            nodes.append(helper.make_node("Mul", [p + "rescaled", q + "scale"], [node.output[0]]))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    if count and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))
    return {
        "method": "per-token int8 (scrclf.export.quantization.quantize_per_token)",
        "weight_type": "int8, one scale per output column",
        "per_channel": True,
        "activations": (
            "uint8, one scale per token (row), computed from that row at run time: symmetric,"
            " or over the row's range for GELU outputs"
        ),
        "quantized_matmuls": count,
        "quantized_activations": len(quantized),
        "one_sided_activations": len(set(quantized) & one_sided),
        "batch_independent": True,
    }
