"""The ``scrclf-classification`` pipeline for transformers' ``pipeline()`` (train install).

After ``import scrclf``, transformers knows the scrclf model type and this task::

    import scrclf
    from transformers import pipeline

    clf = pipeline("scrclf-classification", model="models/NAME")
    clf("The board should ...")          # {"themes": {...}, "evidence": {...}, ...}
    clf({"text": "...", "finding": "..."})

Each result has the shape of one item of ``scrclf.load(path).predict(...)``: the model's
tokenization (its ``max_seq_length``, the finding as text pair), its temperatures,
thresholds and decision rule, so the labels are the same. Nothing runs remote code:
``trust_remote_code`` stays off, the classes are registered in-process.

Other pipeline tasks do not apply. ``pipeline("feature-extraction", model=path)`` loads the
model and fails in transformers' own post-processing (``'tuple' object has no attribute
'tolist'``): the outputs are one logits tensor per task, not features, and transformers
passes the pipeline's task on to no hook of the model where it could be refused sooner.
For sentence features, load the encoder: ``AutoModel.from_pretrained(path).encoder``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from scrclf.data.records import tokenize
from scrclf.errors import DataError
from scrclf.inference.classifier import (
    OUTPUT_PREFIX,
    finding_problem,
    format_predictions,
    text_problem,
)
from scrclf.modeling.model import register_auto_classes

PIPELINE_TASK = "scrclf-classification"


class ScrClfPipeline(Pipeline):
    """Text (or ``{"text", "finding"}``) in, the decisions of every task out."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"{PIPELINE_TASK} takes no options, got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, inputs: str | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if isinstance(inputs, Mapping):
            text, finding = inputs.get("text"), inputs.get("finding")
        else:
            text, finding = inputs, None
        problem = text_problem(text)
        if problem:
            raise DataError(f"text {problem}")
        problem = finding_problem(finding)
        if problem:
            raise DataError(f"finding {problem}")
        config = self.model.config
        pairs = [finding] if config.text_pair else None
        enc = tokenize(self.tokenizer, [text], pairs, int(config.max_seq_length))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(**model_inputs, return_dict=True)
        names = self.model.task_names
        return {OUTPUT_PREFIX + n: t for n, t in zip(names, out.logits, strict=True)}

    def postprocess(self, model_outputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        tasks = self.model.config.task_set
        logits = [model_outputs[OUTPUT_PREFIX + t.name].float().cpu().numpy() for t in tasks]
        return format_predictions(tasks, logits)[0]


def register() -> None:
    """Register the Auto classes and the pipeline task (idempotent)."""
    register_auto_classes()
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=ScrClfPipeline, pt_model=AutoModel, type="text"
        )
