"""Task specifications: which columns the model predicts and how.

A task is one prediction head. Specs come from the ``task`` config group and travel inside
the saved model config, so a model always knows its own labels, thresholds and
temperatures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scrclf.errors import TaskConfigError  # noqa: F401 (re-exported)

# The headline score of every report: the mean over tasks of each task's macro-F1.
HEADLINE = "mean_macro_f1"
# A teacher's logits for a task travel beside its targets as ``teacher_<task>`` when a model
# trains with distillation (scrclf.training.distill).
TEACHER_PREFIX = "teacher_"
# Out-of-fold wide logits of a training item travel beside its targets as
# ``wide_offset_<task>`` when the encoder learns a task as a residual of the wide part
# (``model.wide.residual``): the task's training loss is taken on encoder + these logits.
WIDE_OFFSET_PREFIX = "wide_offset_"
# The per-task float columns that travel beside a task's targets, by prefix: the collator,
# the lean loop's token store and the model's forward read them alike.
BESIDE_TARGET_PREFIXES = (TEACHER_PREFIX, WIDE_OFFSET_PREFIX)

MULTI_LABEL = "multi_label"
SINGLE_LABEL = "single_label"
TASK_TYPES = (MULTI_LABEL, SINGLE_LABEL)
CLASS_WEIGHTINGS = ("none", "balanced")


@dataclass
class TaskSpec:
    name: str
    type: str
    labels: list[str]
    column: str | None = None
    loss_weight: float = 1.0
    class_weighting: str = "none"
    max_labels: int | None = None
    # Multi-label: after per-label threshold tuning, shift all thresholds together so the
    # mean number of labels per item matches the annotations (see scrclf.calibration).
    count_calibration: bool = False
    # Multi-label: thresholds are tuned for F1 only among those that give each label to a
    # share of held-out items within this distance of its annotated share (null: any).
    share_tolerance: float | None = None
    # Single-label: fit one additive offset per class on held-out data, for macro-F1 (see
    # scrclf.calibration.tune_offsets); without it the decision is the top class.
    class_offsets: bool = False
    # Filled in by training / calibration and stored with the model.
    class_weights: list[float] | None = None
    thresholds: list[float] | None = None
    # Single-label: added to logit / temperature before the top class is taken.
    offsets: list[float] | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        where = f"task '{self.name}'"
        if not self.name or not isinstance(self.name, str):
            raise TaskConfigError("every task needs a non-empty string 'name'")
        if self.type not in TASK_TYPES:
            raise TaskConfigError(f"{where}: type must be one of {TASK_TYPES}, got {self.type!r}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise TaskConfigError(f"{where}: 'labels' must be a non-empty list of distinct names")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise TaskConfigError(
                f"{where}: class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}"
            )
        if self.type == SINGLE_LABEL and len(self.labels) < 2:
            raise TaskConfigError(f"{where}: a single-label task needs at least 2 labels")
        if self.loss_weight < 0:
            raise TaskConfigError(f"{where}: loss_weight must be >= 0")
        if self.column is None:
            self.column = self.name
        self.labels = [str(label) for label in self.labels]
        for key in ("class_weights", "thresholds", "offsets"):
            value = getattr(self, key)
            if value is not None:
                if len(value) != len(self.labels):
                    raise TaskConfigError(
                        f"{where}: {key} has {len(value)} values for {len(self.labels)} labels"
                    )
                setattr(self, key, [float(v) for v in value])
        if self.share_tolerance is not None:
            if self.type != MULTI_LABEL:
                raise TaskConfigError(f"{where}: share_tolerance applies to multi-label tasks only")
            if not 0 < float(self.share_tolerance) < 1:
                raise TaskConfigError(
                    f"{where}: share_tolerance must be between 0 and 1, got {self.share_tolerance!r}"
                )
            self.share_tolerance = float(self.share_tolerance)
        if self.count_calibration and self.type != MULTI_LABEL:
            raise TaskConfigError(f"{where}: count_calibration applies to multi-label tasks only")
        if self.thresholds is not None and self.type != MULTI_LABEL:
            raise TaskConfigError(f"{where}: thresholds apply to multi-label tasks only")
        if (self.class_offsets or self.offsets is not None) and self.type != SINGLE_LABEL:
            raise TaskConfigError(f"{where}: class offsets apply to single-label tasks only")
        for label, offset in zip(self.labels, self.offsets or [], strict=False):
            if not math.isfinite(offset):
                raise TaskConfigError(
                    f"{where}: the offset of '{label}' must be a finite number, got {offset!r}"
                )
        for label, threshold in zip(self.labels, self.thresholds or [], strict=False):
            if not (0.0 < threshold < 1.0):  # also refuses NaN
                raise TaskConfigError(
                    f"{where}: the threshold of '{label}' must be a number between 0 and 1 "
                    f"(exclusive), got {threshold!r}"
                )
        try:
            self.temperature = float(self.temperature)
        except (TypeError, ValueError):
            raise TaskConfigError(
                f"{where}: temperature must be a number, got {self.temperature!r}"
            ) from None
        if not (0.0 < self.temperature < math.inf):  # also refuses NaN
            raise TaskConfigError(
                f"{where}: temperature must be finite and > 0, got {self.temperature!r}"
            )

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def is_multi_label(self) -> bool:
        return self.type == MULTI_LABEL

    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def decision_offsets(self) -> list[float]:
        return list(self.offsets) if self.offsets is not None else [0.0] * self.num_labels

    def decision_thresholds(self) -> list[float]:
        return list(self.thresholds) if self.thresholds is not None else [0.5] * self.num_labels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskSet:
    tasks: list[TaskSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise TaskConfigError("at least one task is required")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise TaskConfigError(f"task names must be distinct, got {names}")

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def to_list(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.tasks]

    @classmethod
    def from_config(cls, tasks: Sequence[Mapping[str, Any]] | Any) -> TaskSet:
        """Build from a list of mappings (plain dicts or an OmegaConf ListConfig)."""
        try:
            from omegaconf import OmegaConf

            if OmegaConf.is_config(tasks):
                tasks = OmegaConf.to_container(tasks, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(tasks, Sequence) or isinstance(tasks, (str, bytes)):
            raise TaskConfigError("'tasks' must be a list of task mappings")
        known = set(TaskSpec.__dataclass_fields__)
        specs = []
        for i, raw in enumerate(tasks):
            if not isinstance(raw, Mapping):
                raise TaskConfigError(f"tasks[{i}] must be a mapping, got {type(raw).__name__}")
            unknown = set(raw) - known
            if unknown:
                raise TaskConfigError(
                    f"tasks[{i}] has unknown keys {sorted(unknown)}; known: {sorted(known)}"
                )
            try:
                specs.append(TaskSpec(**dict(raw)))
            except TypeError as err:
                raise TaskConfigError(f"tasks[{i}]: {err}") from err
        return cls(specs)
