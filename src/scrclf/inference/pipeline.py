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

    # transformers types these None; pipeline() reads them as "load this component?".
    _load_tokenizer = True  # type: ignore[assignment]
    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"{PIPELINE_TASK} takes no options, got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, input_: Any, **preprocess_parameters: Any) -> dict[str, Any]:
        """A text, or ``{"text": ..., "finding": ...}``, tokenized as the model was trained."""
        if isinstance(input_, Mapping):
            text, finding = input_.get("text"), input_.get("finding")
        else:
            text, finding = input_, None
        problem = text_problem(text)
        if problem:
            raise DataError(f"text {problem}")
        problem = finding_problem(finding)
        if problem:
            raise DataError(f"finding {problem}")
        config = self.model.config
        pairs = [finding] if config.text_pair else None
        enc = tokenize(self.tokenizer, [str(text)], pairs, int(config.max_seq_length))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}

    def _forward(self, input_tensors: dict[str, Any], **forward_parameters: Any) -> Any:
        out = self.model(**input_tensors, return_dict=True)
        names = list(getattr(self.model, "task_names", []))
        return {OUTPUT_PREFIX + n: t for n, t in zip(names, out.logits, strict=True)}

    def postprocess(self, model_outputs: Any, **postprocess_parameters: Any) -> dict[str, Any]:
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


# Importing this module first (before scrclf's model module) leaves the import hook of
# ``import scrclf`` unable to load it yet: register here as well.
register()
