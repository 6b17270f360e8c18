"""Distillation: a trained teacher's logits on the training split as soft targets.

With ``distill.teacher`` set to a finished run (or an export), every training item carries
the teacher's logits per task (dataset columns ``teacher_<task>``); the model's loss is then
``(1 - weight) x`` the loss on the annotated labels ``+ weight x`` the loss on the teacher's
probabilities at ``temperature`` (:meth:`scrclf.modeling.model.ScrClfModel.forward`).

When the teacher has a fitted wide part (``mode: logreg``), its soft targets are its
encoder's logits alone: the student's wide part is fitted the same way and held fixed, so
its encoder learns what the teacher's encoder learnt. A teacher with a jointly trained wide
part gives its full logits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.errors import SettingsError
from scrclf.tasks import TaskSet
from scrclf.training.array_cache import cached_arrays, new_digest, texts_digest

logger = logging.getLogger(__name__)

TEACHER_CACHE = "distill_logits.npz"


def _check_tasks(teacher: TaskSet, student: TaskSet, where: Path) -> None:
    for task in student:
        if task.name not in teacher.names:
            raise SettingsError(f"distill.teacher={where}: the teacher has no task '{task.name}'")
        if list(teacher[task.name].labels) != list(task.labels):
            raise SettingsError(
                f"distill.teacher={where}: task '{task.name}' has labels "
                f"{list(teacher[task.name].labels)} in the teacher, {list(task.labels)} here"
            )


def teacher_logits(
    teacher: str | Path,
    tasks: TaskSet,
    texts: Sequence[str],
    findings: Sequence[str | None] | None,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """The teacher's logits per task on ``texts`` (paired with ``findings``).

    They are kept beside the teacher (``distill_logits.npz``, keyed by a SHA-256 of the
    texts), so students trained on the same split reuse one forward pass of the teacher.
    """
    from scrclf.evaluation.evaluate import load_classifier, model_logits, resolve_model

    source = resolve_model(teacher)
    cache = Path(source.path) / TEACHER_CACHE
    weights = source.model_dir / "model.safetensors"
    stamp = f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}" if weights.is_file() else ""
    key = texts_digest(new_digest(stamp), texts, findings).hexdigest()

    def compute() -> dict[str, np.ndarray]:
        classifier = load_classifier(source, backend="torch")
        _check_tasks(classifier.tasks, tasks, Path(teacher))
        model = getattr(classifier.engine, "model", None)
        wide: Mapping[str, Any] | None = getattr(getattr(model, "config", None), "wide", None)
        if model is not None and wide and wide.get("mode") == "logreg":
            model.config.wide = {**wide, "mix": {name: 0.0 for name in model.task_names}}
        logits, _ = model_logits(classifier, texts, findings, batch_size, desc="teacher")
        return {t.name: np.asarray(logits[t.name], dtype=np.float32) for t in tasks}

    saved = cached_arrays(cache, key, compute, wanted=tasks.names, best_effort=True)
    return {t.name: saved[t.name] for t in tasks}
