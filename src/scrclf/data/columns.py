"""Column maps and label normalisation for files that are not in the corpus schema.

An evaluator's file rarely uses the corpus's column names (``id``, ``text``, ``finding``,
``review_id`` and one column per task) or its label spellings. A :class:`ColumnMap` says
which of their columns holds what, and optionally how their label codes translate into
the codebook's labels. The same map is given as command-line options
(``--column id=ref``, ``--label evidence:NS=none_stated``), as Hydra keys scoped to the
external file (``columns.id=ref`` in ``evaluate.yaml``, ``data.external_columns.id=ref``
in a benchmark suite), or as a small YAML/JSON file reusable across commands
(``--columns my_columns.yaml``)::

    id: ref
    text: recommendation
    finding: rationale
    review: review
    labels:            # task -> column
      themes: theme_codes
      evidence: evidence_basis
      action_strength: strength
    label_map:         # task -> {their code: our label}
      evidence: {NS: none_stated}

A map only renames columns of the file it is applied to; the training corpus settings are
never changed. Labels are matched after normalisation (case, spaces, hyphens and
underscores do not matter: ``None Stated`` is ``none_stated``); a label that still matches
nothing is refused with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrclf.data.records import Record, closest_label, label_key, label_list
from scrclf.errors import DataError, SettingsError
from scrclf.tasks import TaskSet

# The non-label fields of a map and the data setting each one renames into.
FIELDS = {
    "id": "id_column",
    "text": "text_column",
    "finding": "pair_column",
    "review": "group_column",
}
MAP_KEYS = (*FIELDS, "labels", "label_map", "file")


@dataclass(frozen=True)
class ColumnMap:
    """Which column of a file holds the id, text, finding, review and each task's labels,
    and how its label codes translate into the codebook's labels."""

    id: str | None = None
    text: str | None = None
    finding: str | None = None
    review: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    label_map: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (
            self.id or self.text or self.finding or self.review or self.labels or self.label_map
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in FIELDS if getattr(self, k)}
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.label_map:
            out["label_map"] = {t: dict(m) for t, m in self.label_map.items()}
        return out

    @classmethod
    def from_config(cls, cfg: Any, section: str = "columns") -> ColumnMap:
        """A map from a mapping (a Hydra node or a parsed file), a path to a map file, or
        None (no map). A mapping may name a ``file`` whose entries it then overrides."""
        from omegaconf import DictConfig, OmegaConf

        if cfg is None or cfg == {}:
            return cls()
        if isinstance(cfg, (str, Path)):
            return cls.from_file(cfg)
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise SettingsError(f"{section} must be a mapping or a file path, got {cfg!r}")
        unknown = sorted(set(cfg) - set(MAP_KEYS))
        if unknown:
            raise SettingsError(
                f"unknown setting {section}.{unknown[0]}; known: {', '.join(MAP_KEYS)}"
            )
        base = cls.from_file(cfg["file"]) if cfg.get("file") else cls()
        values: dict[str, Any] = {}
        for key in FIELDS:
            value = cfg.get(key)
            if value is not None:
                if not isinstance(value, str) or not value.strip():
                    raise SettingsError(f"{section}.{key} must be a column name, got {value!r}")
                values[key] = value
        labels = _str_mapping(cfg.get("labels"), f"{section}.labels")
        label_map: dict[str, dict[str, str]] = {}
        raw_map = cfg.get("label_map") or {}
        if not isinstance(raw_map, Mapping):
            raise SettingsError(f"{section}.label_map must map a task to {{code: label}}")
        for task, codes in raw_map.items():
            label_map[str(task)] = _str_mapping(codes, f"{section}.label_map.{task}")
        return base.merged(cls(labels=labels, label_map=label_map, **values))

    @classmethod
    def from_file(cls, path: str | Path) -> ColumnMap:
        """A map file: YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise DataError("column map file not found", path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise DataError(f"cannot read the column map: {one_line_of(err)}", path) from None
        if not isinstance(data, Mapping):
            raise DataError("a column map file must hold a mapping (id: ..., text: ...)", path)
        if "file" in data:
            raise DataError("a column map file cannot name another map file ('file')", path)
        try:
            return cls.from_config(dict(data), section=str(path))
        except SettingsError as err:
            raise DataError(str(err), path) from None

    @classmethod
    def from_options(
        cls,
        file: str | Path | None = None,
        columns: Sequence[str] = (),
        labels: Sequence[str] = (),
    ) -> ColumnMap:
        """A map from command-line options: ``--columns FILE``, ``--column KEY=NAME``
        (KEY: id, text, finding, review or a task name) and ``--label TASK:CODE=LABEL``."""
        base = cls.from_file(file) if file else cls()
        values: dict[str, Any] = {}
        label_columns: dict[str, str] = {}
        for option in columns:
            key, sep, name = option.partition("=")
            if not sep or not key.strip() or not name.strip():
                raise SettingsError(f"--column takes KEY=NAME, got {option!r}")
            key = key.strip()
            if key in FIELDS:
                values[key] = name.strip()
            else:
                label_columns[key] = name.strip()
        label_map: dict[str, dict[str, str]] = {}
        for option in labels:
            task, sep, rest = option.partition(":")
            code, sep2, label = rest.rpartition("=")
            if not sep or not sep2 or not task.strip() or not code or not label.strip():
                raise SettingsError(f"--label takes TASK:CODE=LABEL, got {option!r}")
            label_map.setdefault(task.strip(), {})[code] = label.strip()
        return base.merged(cls(labels=label_columns, label_map=label_map, **values))

    def merged(self, other: ColumnMap) -> ColumnMap:
        """This map with the entries ``other`` sets taking precedence."""
        values = {k: getattr(other, k) or getattr(self, k) for k in FIELDS}
        label_map = {t: dict(m) for t, m in self.label_map.items()}
        for task, codes in other.label_map.items():
            label_map.setdefault(task, {}).update(codes)
        return ColumnMap(labels={**self.labels, **other.labels}, label_map=label_map, **values)

    def check_tasks(self, tasks: TaskSet) -> None:
        for where, names in (("labels", self.labels), ("label_map", self.label_map)):
            for name in names:
                if name not in tasks.names:
                    close = difflib.get_close_matches(name, tasks.names, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise SettingsError(
                        f"column map {where}: unknown task or field '{name}'{hint}; fields: "
                        f"{', '.join(FIELDS)}; tasks: {', '.join(tasks.names)}"
                    )

    def renames(self, settings: Mapping[str, Any], tasks: TaskSet) -> dict[str, str]:
        """Their column -> our column (the data settings' names and the tasks' columns)."""
        self.check_tasks(tasks)
        out: dict[str, str] = {}
        for key, setting in FIELDS.items():
            theirs = getattr(self, key)
            if theirs is None:
                continue
            ours = settings.get(setting)
            if ours is None:
                raise SettingsError(
                    f"column map names a {key} column ('{theirs}'), but the model uses none "
                    f"({setting} is null)"
                )
            out[theirs] = str(ours)
        for task, theirs in self.labels.items():
            out[theirs] = str(tasks[task].column)
        targets = Counter(out.values())
        twice = [c for c, n in targets.items() if n > 1]
        if twice:
            raise SettingsError(f"column map sends two columns to '{twice[0]}'")
        return out


def _str_mapping(value: Any, section: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(f"{section} must be a mapping, got {value!r}")
    out = {}
    for key, item in value.items():
        if item is None:
            continue
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise SettingsError(f"{section}.{key} must be a name, got {item!r}")
        out[str(key)] = str(item)
    return out


def one_line_of(err: BaseException) -> str:
    return " ".join(str(err).split())


def file_columns(records: Sequence[Record]) -> list[str]:
    """Every column that some row of ``records`` has, in first-seen order."""
    seen: dict[str, None] = {}
    for rec in records:
        for key in rec.data:
            seen.setdefault(str(key), None)
    return list(seen)


def apply_column_map(
    records: Sequence[Record],
    column_map: ColumnMap,
    settings: Mapping[str, Any],
    tasks: TaskSet,
    source: str | Path | None = None,
) -> list[Record]:
    """``records`` with their columns renamed to ours; a mapped column that the file lacks
    is an error naming the columns it has."""
    renames = column_map.renames(settings, tasks)
    if not renames or not records:
        return list(records)
    have = file_columns(records)
    for theirs in renames:
        if theirs not in have:
            raise DataError(f"no column '{theirs}' (column map); the file has {have}", source)
    out = []
    for rec in records:
        data = {k: v for k, v in rec.data.items() if k not in renames.values() or k in renames}
        moved = {ours: rec.data.get(theirs) for theirs, ours in renames.items()}
        for theirs in renames:
            data.pop(theirs, None)
        data.update(moved)
        out.append(Record(data, rec.file, rec.line))
    return out


def check_columns(
    records: Sequence[Record],
    settings: Mapping[str, Any],
    source: str | Path | None = None,
    option: str = "--column",
) -> None:
    """A file without our id or text column: an error naming its columns and how to map."""
    if not records:
        return
    have = file_columns(records)
    for key in ("id", "text"):
        ours = settings.get(FIELDS[key])
        if ours and ours not in have:
            raise DataError(
                f"no '{ours}' column; the file has {have}; name yours with "
                f"{option} {key}=NAME (or a column map file)",
                source,
            )


def normalise_labels(
    records: Sequence[Record], tasks: TaskSet, label_map: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Translate label codes (``label_map``) and spellings (case, spaces, hyphens,
    underscores) into the codebook's labels, in place; returns notes on what was changed.
    Values that match no label are left for validation to refuse (with a suggestion)."""
    notes: list[str] = []
    for task in tasks:
        codes = dict(label_map.get(task.name, {}))
        for code, label in codes.items():
            if label not in task.labels:
                close = closest_label(label, task.labels)
                hint = f" (did you mean '{close}'?)" if close else ""
                raise SettingsError(
                    f"label map of '{task.name}': '{code}' maps to unknown label '{label}'"
                    f"{hint}; allowed: {', '.join(task.labels)}"
                )
        by_key = {label_key(lab): lab for lab in task.labels}
        by_key.update({label_key(c): lab for c, lab in codes.items()})
        lookup = {**{lab: lab for lab in task.labels}, **codes}
        changed: Counter[tuple[str, str]] = Counter()
        for rec in records:
            if task.column not in rec.data or rec.data[task.column] is None:
                continue
            value = rec.data[task.column]
            if task.is_multi_label and isinstance(value, str):
                value = label_list(value)
            as_list = task.is_multi_label and isinstance(value, list)
            values = value if as_list else [value]
            out = []
            for v in values:
                new = (lookup.get(v) or by_key.get(label_key(v))) if isinstance(v, str) else None
                if new is None:
                    out.append(v)
                    continue
                if new != v:
                    changed[(v, new)] += 1
                out.append(new)
            rec.data[task.column] = out if as_list else out[0]
        if changed:
            shown = ", ".join(f"'{a}' as '{b}' ({n})" for (a, b), n in sorted(changed.items()))
            notes.append(f"{task.name}: labels read {shown}")
    return notes
