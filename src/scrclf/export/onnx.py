"""The ONNX graph of a model: the logits-only wrapper that exporters trace, example inputs,
and the fp32 export with dynamic batch and sequence axes (see docs/onnx_contract.md).

The int8 graph (:mod:`scrclf.export.quantization`) is built from the same wrapper and inputs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrclf.inference.classifier import INPUT_NAMES, OUTPUT_PREFIX

DEFAULT_OPSET = 18


@contextlib.contextmanager
def quiet_exporters(*logger_names: str) -> Iterator[None]:
    """Silence exporter chatter (warnings, log lines) that asks nothing of the user."""
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def logits_module(model):
    import torch

    class LogitsOnly(torch.nn.Module):
        """The classifier with positional token inputs and a tuple of logits as output."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                return_dict=True,
            )
            return tuple(out.logits)

    return LogitsOnly(model).eval()


def example_inputs():
    """Inputs that exporters trace: two text pairs of unequal length, so that the graph
    handles padding and both token types."""
    import torch

    input_ids = torch.full((2, 8), 1000, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 4:] = 1
    return input_ids, attention_mask, token_type_ids


def export_onnx(model, path: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write ``model`` as one fp32 ONNX file with dynamic batch and sequence axes.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, ``[batch,
    sequence]``); outputs ``logits_<task>`` (float32, ``[batch, labels]``) in task order.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    input_ids, attention_mask, token_type_ids = example_inputs()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    output_names = [OUTPUT_PREFIX + name for name in model.task_names]
    with quiet_exporters("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
        torch.onnx.export(
            logits_module(model),
            (input_ids, attention_mask, token_type_ids),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=output_names,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            opset_version=int(opset),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            tensor = v.type.tensor_type
            out.append(
                {
                    "name": v.name,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
                    "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim],
                }
            )
        return out

    return {
        "opset": opsets.get("ai.onnx"),
        "inputs": describe(graph.graph.input),
        "outputs": describe(graph.graph.output),
    }
