"""The int8 ONNX graph: a graph built for onnxruntime, smoothed, then statically quantized.

Each item's labels must not depend on the items batched with it. Dynamic int8 quantization
(``quantize_dynamic``) computes one activation scale per tensor at run time, over the whole
batch padding included, so a text's logits move with its neighbours (and with the batch's
padded length). Here activations are quantized with **static** scales instead: measured
once on calibration text and stored in the graph as QuantizeLinear/DequantizeLinear (QDQ)
pairs, so every item is computed with the same scales whatever the batch holds.

Weights are int8 with one scale per output channel. A few input channels of a
transformer's hidden states carry values many times larger than the rest; one activation
scale per tensor then leaves the ordinary channels only a few int8 steps. The graph is
therefore built in four steps:

1. **export for onnxruntime**: the model with plain ("eager") attention through the
   TorchScript exporter, whose graph onnxruntime's transformer optimizer recognises;
2. **fusion** (``onnxruntime.transformers.optimizer``, optional): attention, embedding +
   LayerNorm and bias + GELU become single onnxruntime operators (residual + LayerNorm does
   not: that fused kernel is slower on CPU). The fused graph is kept only where its fp32
   outputs match the unfused graph's. The fused ``Attention`` operator has no QDQ form, so
   its projections stay fp32; the shipped setting leaves fusion off;
3. **smoothing** (the activation-smoothing idea of "SmoothQuant: Accurate and Efficient
   Post-Training Quantization for Large Language Models", Xiao et al., 2023): for every
   tensor that feeds weight matrices, per-channel scales ``s_j = max|x_j|^alpha /
   max|w_j|^(1 - alpha)`` measured on calibration text divide the activation (one ``Mul``)
   and multiply the matching weight rows, which leaves the fp32 function unchanged and moves
   the outliers into weights, where per-channel scales absorb them;
4. **static int8 quantization** (``quantize_static``, QDQ format) of the matrix products
   whose input is a LayerNorm output (see :func:`normalized_input_matmuls`): QInt8 weights
   per channel, QUInt8 activations with scales from the calibration text (min/max).

Without calibration text no static scale can be measured: the graph is then quantized
dynamically, and ``scrclf.json`` records ``"batch_independent": false``.
The result runs on onnxruntime; ``onnx/model.onnx`` stays a standard-operator fp32 graph.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
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
) -> dict[str, int] | None:
    """Fuse transformer operators; returns the fused-operator counts, or None (and writes
    nothing) when the optimizer fails, fuses nothing, or changes the logits."""
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        options = FusionOptions("bert")
        # Residual + LayerNorm stay two operators: onnxruntime's SkipLayerNormalization CPU
        # kernel measured 6x slower than Add + LayerNormalization (benchmarks/README.md).
        options.enable_skip_layer_norm = False
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
) -> dict[str, Any]:
    """Write the int8 graph of ``model`` to ``dst`` and describe how it was made.

    Args:
        model: the ``ScrClfModel`` to quantize.
        dst: the ``.onnx`` file to write.
        calibration: padded int64 batches (``input_ids``, ``attention_mask``,
            ``token_type_ids``) of calibration text: they set the static activation scales
            and the smoothing; without them the graph is quantized dynamically (its labels
            then depend on the batch) and not smoothed.
        smooth_alpha: SmoothQuant's migration strength (0: none, 1: all of the activation
            range into the weights); None turns smoothing off; by default
            ``quantization.smooth_alpha`` of the shipped ``configs/export.yaml``.
        fuse_operators: apply onnxruntime's transformer fusion; by default
            ``quantization.fuse`` of the shipped ``configs/export.yaml``.
    """
    if smooth_alpha == "shipped" or fuse_operators is None:
        shipped = QuantizationSettings.defaults()
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
            counts = fuse(current, fused, heads, hidden, calibration[:2]) if heads else None
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
        if calibration:
            info.update(quantize_static_qdq(current, dst, calibration))
        else:
            logger.warning("int8 graph quantized dynamically: no calibration text")
            info.update(quantize_dynamic_int8(current, dst))
    return info


# Operators whose output is a normalized hidden state: narrow, stable ranges that one static
# scale per tensor represents well.
NORMALIZING_OPS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization")


def normalized_input_matmuls(model_path: str | Path) -> list[str]:
    """Names of the MatMul nodes that multiply a LayerNorm output (through a smoothing
    ``Mul``, if any) by a 2-D weight initializer: the ones quantized statically.

    Matrix products fed by the attention context or by GELU stay fp32: their inputs are
    heavy-tailed, and with one static scale per tensor quantizing them too moved the theme
    decisions of the default MiniLM model on 28% of validation items (against 6% as here).
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def source(name: str):
        node = producers.get(name)
        while node is not None and node.op_type == "Mul" and node.name.startswith("smooth_"):
            node = producers.get(node.input[0])
        return node

    names = []
    for activation, nodes in _weighted_groups(graph, initializers).items():
        origin = source(activation)
        if origin is None or origin.op_type not in NORMALIZING_OPS:
            continue
        names += [node.name for node in nodes if node.op_type == "MatMul"]
    return names


class _BatchReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over padded batches."""

    def __init__(self, model_path: str | Path, batches: Sequence[Mapping[str, np.ndarray]]):
        import onnx

        self.names = [i.name for i in onnx.load(str(model_path)).graph.input]
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        return {
            n: batch[n] if n in batch else np.zeros_like(batch["input_ids"]) for n in self.names
        }

    def __iter__(self):
        return iter(self.get_next, None)


def quantize_static_qdq(
    src: str | Path, dst: str | Path, calibration: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, Any]:
    """Static QDQ int8 of the weight matrix products of ``src``, activation scales from the
    calibration batches; returns its description for ``scrclf.json``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_BatchReader, CalibrationDataReader):
        pass

    nodes = normalized_input_matmuls(src)
    with quiet_exporters("root", "onnxruntime"):
        quantize_static(
            str(src),
            str(dst),
            Reader(src, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return {
        "method": "onnxruntime.quantization.quantize_static",
        "quantized_matmuls": quantized_matmuls(dst),
        "quantized": "MatMul nodes whose input is a LayerNorm output; the rest stay fp32",
        "format": "QDQ",
        "weight_type": "QInt8",
        "per_channel": True,
        "activations": "uint8, one scale per tensor, calibrated (min/max) and fixed in the graph",
        "calibration_items": int(sum(len(b["input_ids"]) for b in calibration)),
        "batch_independent": True,
    }


def quantized_matmuls(model_path: str | Path) -> int:
    """How many MatMul nodes of a QDQ graph take both inputs through DequantizeLinear."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(
        1
        for n in graph.node
        if n.op_type == "MatMul" and len(n.input) > 1 and set(n.input[:2]) <= dequantized
    )


def quantize_dynamic_int8(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Dynamic int8 (activation scales computed per batch at run time): the fallback when
    there is no calibration text."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_exporters("root", "onnxruntime"):
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "activations": "uint8, one scale per tensor, computed at run time",
        "batch_independent": False,
    }
