"""scrclf's multi-task metric as a Hugging Face ``evaluate`` module.

Load it offline from the installed package::

    import evaluate, scrclf
    metric = evaluate.load(scrclf.metric_path())
    metric.compute(predictions=[{"themes": [...], "evidence": [...], ...}, ...],
                   references=[{"themes": ["training_learning"], "evidence": "research", ...}])

Each prediction holds, per task, the raw scores (logits) of every label in the task
config's order; each reference the annotated label(s). Scores become decisions exactly as
in scrclf: ``model=PATH`` (a model or export folder) applies the temperatures and
per-label thresholds stored with the model (a training run, its ``model/`` folder or an
export folder); without it, temperature 1 and threshold 0.5.
``tasks=PATH`` names another task config (default: the codebook shipped with scrclf).

The result is :func:`scrclf.evaluation.metrics.compute_metrics` flattened to
``task/metric`` keys (micro/macro/weighted F1, accuracy or subset accuracy and Hamming
loss, PR-AUC, ECE) plus ``mean_macro_f1``, the mean over tasks of macro-F1.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_CITATION = ""
_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: per item, a mapping task -> list of logits (one per label).
    references: per item, a mapping task -> label (single-label) or list of labels.
    model: optional model folder whose stored temperatures and thresholds are applied.
    tasks: optional task config YAML (default: scrclf's codebook).
Returns:
    ``task/metric`` scores and ``mean_macro_f1``.
"""


def _task_set(tasks=None, model=None):
    if model is not None:
        from scrclf.evaluation.evaluate import resolve_model
        from scrclf.inference.classifier import read_tasks

        return read_tasks(resolve_model(model).model_dir)[1]
    from scrclf.settings import task_set

    return task_set(tasks)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ScrclfMultitask(evaluate.Metric):
    """Multi-task scores of scrclf: every task at its decision rule, and the headline."""

    def _info(self):
        tasks = _task_set()
        predictions = {t.name: datasets.Sequence(datasets.Value("float64")) for t in tasks}
        references = {
            t.name: (
                datasets.Sequence(datasets.Value("string"))
                if t.is_multi_label
                else datasets.Value("string")
            )
            for t in tasks
        }
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": predictions, "references": references}),
            reference_urls=[],
        )

    def _compute(self, predictions, references, model=None, tasks=None):
        from scrclf.evaluation.metrics import compute_metrics, flatten

        task_set = _task_set(tasks, model)
        logits, targets = [], []
        for task in task_set:
            logits.append(np.asarray([p[task.name] for p in predictions], dtype=np.float64))
            index = task.label2id()
            if task.is_multi_label:
                y = np.zeros((len(references), task.num_labels), dtype=np.int64)
                for i, ref in enumerate(references):
                    for label in ref[task.name]:
                        y[i, index[label]] = 1
            else:
                y = np.asarray([index[ref[task.name]] for ref in references], dtype=np.int64)
            targets.append(y)
        return flatten(compute_metrics(task_set, logits, targets))
