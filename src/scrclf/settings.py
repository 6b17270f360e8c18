"""Typed settings: where the default configs live, the task set they define, and one
checked dataclass per config section that code reads instead of raw mappings.

The Hydra configs ship inside the package as :mod:`scrclf.configs` (the repository's
``configs/`` folder, mapped into the wheel), so an installed scrclf finds its defaults
without a source tree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from scrclf.errors import SearchConfigError, SettingsError
from scrclf.tasks import TaskSet

TASK_CONFIG = ("task", "codebook.yaml")


def config_dir() -> Path:
    """The folder of the shipped Hydra configs (``train.yaml``, ``model/``, ``task/`` ...)."""
    return Path(str(resources.files("scrclf.configs")))


def task_set(path: str | Path | None = None) -> TaskSet:
    """The tasks of a task config YAML, by default the codebook's, shipped with scrclf."""
    from omegaconf import OmegaConf

    file = Path(path) if path is not None else config_dir().joinpath(*TASK_CONFIG)
    if not file.is_file():
        raise SettingsError(f"task config not found: {file}")
    return TaskSet.from_config(OmegaConf.load(file).tasks)


# --------------------------------------------------------------------------- trainer

DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
LOOPS = ("trainer", "lean")
LR_SCALING = ("none", "linear", "sqrt")


def _typed(
    section: str,
    key: str,
    value: Any,
    kind: type,
    *,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
) -> Any:
    """``value`` as ``kind``, or a :class:`SettingsError` naming ``section.key``."""
    name = f"{section}.{key}"
    if value is None:
        if optional:
            return None
        raise SettingsError(f"{name} must be set")
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            out: Any = value
        elif kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            out = int(float(value))
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{name} must be {kind.__name__ if kind is not str else 'text'}, got {value!r}"
        ) from None
    if minimum is not None and out < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {value!r}")
    if choices is not None and out not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return out


@dataclass(frozen=True)
class TrainerSettings:
    """The ``trainer`` config group, typed and checked once. Defaults live in
    ``configs/trainer/cpu.yaml`` (which ``gpu`` and ``gpu_fast`` extend); see there for what
    each setting does."""

    name: str
    device: str
    loop: str
    max_epochs: int
    batch_size: int
    eval_batch_size: int
    learning_rate: float
    head_lr_scale: float | None
    layer_lr_decay: float | None
    weight_decay: float
    warmup_ratio: float
    label_smoothing: float
    rdrop: float
    fast_dropout: bool
    freeze_layers: int | None
    freeze_word_embeddings: bool
    lr_scheduler: str
    grad_accum_steps: int
    max_grad_norm: float
    precision: str
    optim: str
    group_by_length: bool
    early_stopping_patience: int | None
    eval_last_epochs: int | None
    metric_for_best: str
    save_total_limit: int
    logging_steps: int
    num_threads: int | None
    dataloader_workers: int
    lr_reference_batch_size: int | None
    lr_scaling: str
    compile: bool
    compile_buckets: Any
    cuda_graphs: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainerSettings:
        s = "trainer"
        _keys(cfg, s, {f.name for f in fields(cls)})
        c = cfg
        return cls(
            name=_typed(s, "name", c["name"], str),
            device=_typed(s, "device", c["device"], str, choices=DEVICES),
            loop=_typed(s, "loop", c["loop"], str, choices=LOOPS),
            max_epochs=_typed(s, "max_epochs", c["max_epochs"], int, minimum=1),
            batch_size=_typed(s, "batch_size", c["batch_size"], int, minimum=1),
            eval_batch_size=_typed(s, "eval_batch_size", c["eval_batch_size"], int, minimum=1),
            learning_rate=_typed(s, "learning_rate", c["learning_rate"], float, minimum=0),
            head_lr_scale=_typed(
                s, "head_lr_scale", c["head_lr_scale"], float, minimum=0, optional=True
            ),
            layer_lr_decay=_typed(
                s, "layer_lr_decay", c["layer_lr_decay"], float, minimum=0, optional=True
            ),
            weight_decay=_typed(s, "weight_decay", c["weight_decay"], float, minimum=0),
            warmup_ratio=_typed(s, "warmup_ratio", c["warmup_ratio"], float, minimum=0),
            label_smoothing=_typed(s, "label_smoothing", c["label_smoothing"], float, minimum=0),
            rdrop=_typed(s, "rdrop", c["rdrop"], float, minimum=0),
            fast_dropout=_typed(s, "fast_dropout", c["fast_dropout"], bool),
            freeze_layers=_typed(
                s, "freeze_layers", c["freeze_layers"], int, minimum=0, optional=True
            ),
            freeze_word_embeddings=_typed(
                s, "freeze_word_embeddings", c["freeze_word_embeddings"], bool
            ),
            lr_scheduler=_typed(s, "lr_scheduler", c["lr_scheduler"], str),
            grad_accum_steps=_typed(s, "grad_accum_steps", c["grad_accum_steps"], int, minimum=1),
            max_grad_norm=_typed(s, "max_grad_norm", c["max_grad_norm"], float, minimum=0),
            precision=_typed(s, "precision", c["precision"], str, choices=PRECISIONS),
            optim=_typed(s, "optim", c["optim"], str),
            group_by_length=_typed(s, "group_by_length", c["group_by_length"], bool),
            early_stopping_patience=_typed(
                s,
                "early_stopping_patience",
                c["early_stopping_patience"],
                int,
                minimum=1,
                optional=True,
            ),
            eval_last_epochs=_typed(
                s, "eval_last_epochs", c["eval_last_epochs"], int, minimum=1, optional=True
            ),
            metric_for_best=_typed(s, "metric_for_best", c["metric_for_best"], str),
            save_total_limit=_typed(s, "save_total_limit", c["save_total_limit"], int, minimum=1),
            logging_steps=_typed(s, "logging_steps", c["logging_steps"], int, minimum=1),
            num_threads=_typed(s, "num_threads", c["num_threads"], int, minimum=1, optional=True),
            dataloader_workers=_typed(
                s, "dataloader_workers", c["dataloader_workers"], int, minimum=0
            ),
            lr_reference_batch_size=_typed(
                s,
                "lr_reference_batch_size",
                c["lr_reference_batch_size"],
                int,
                minimum=1,
                optional=True,
            ),
            lr_scaling=_typed(s, "lr_scaling", c["lr_scaling"], str, choices=LR_SCALING),
            compile=_typed(s, "compile", c["compile"], bool),
            compile_buckets=c["compile_buckets"],
            cuda_graphs=_typed(s, "cuda_graphs", c["cuda_graphs"], bool),
        )

    def __post_init__(self) -> None:
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            raise SettingsError(
                f"trainer.layer_lr_decay must be in (0, 1] or null, got {self.layer_lr_decay}"
            )
        if self.freeze_layers is not None and self.compile:
            raise SettingsError(
                "trainer.freeze_layers and trainer.compile cannot be combined: the held-fixed "
                "layers' kept states are looked up per item, outside a compiled graph"
            )
        if not self.label_smoothing < 1:
            raise SettingsError(
                f"trainer.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )

    @property
    def first_evaluated_epoch(self) -> int:
        """The first epoch (1-based) after which the run evaluates on validation: the first,
        or the first of the last ``eval_last_epochs`` of ``max_epochs``."""
        if self.eval_last_epochs is None:
            return 1
        return max(1, self.max_epochs - self.eval_last_epochs + 1)

    @property
    def head_learning_rate(self) -> float | None:
        """``learning_rate x head_lr_scale`` (None: the heads learn at the encoder's rate).

        A scale rather than a rate, so that ``learning_rate=0`` freezes the whole model and a
        search over ``learning_rate`` moves both together.
        """
        if self.head_lr_scale is None or self.head_lr_scale == 1.0:
            return None
        return self.learning_rate * self.head_lr_scale


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSettings:
    """The token and character limits of the ``data`` config group, typed and checked once
    (defaults in ``configs/data/scr_recs.yaml``)."""

    max_length: int
    max_chars: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DataSettings:
        s = "data"
        for key in ("max_length", "max_chars"):
            if key not in cfg:
                raise SettingsError(f"{s}.{key} is missing from the data config")
        return cls(
            max_length=_typed(s, "max_length", cfg["max_length"], int, minimum=8),
            max_chars=_typed(s, "max_chars", cfg["max_chars"], int, minimum=1),
        )

    def check_positions(self, positions: int | None, encoder: str) -> None:
        """``data.max_length`` must fit the encoder's position embeddings: past them the
        model trains on truncated inputs but fails on any longer input once exported."""
        if positions is not None and self.max_length > positions:
            raise SettingsError(
                f"data.max_length={self.max_length} is more than the {positions} positions "
                f"of the encoder ({encoder}); set data.max_length to at most {positions}"
            )


# ------------------------------------------------------------------------- distill


@dataclass(frozen=True)
class DistillSettings:
    """The ``distill`` section of ``configs/train.yaml``, typed and checked once (defaults and
    what each setting does are there)."""

    teacher: str | None
    weight: float
    temperature: float

    @classmethod
    def from_config(cls, cfg: Any) -> DistillSettings:
        s = "distill"
        c = _section(cfg, s)
        _keys(c, s, {f.name for f in fields(cls)})
        weight = _typed(s, "weight", c["weight"], float, minimum=0)
        if weight > 1:
            raise SettingsError(f"{s}.weight must be at most 1, got {c['weight']!r}")
        temperature = _typed(s, "temperature", c["temperature"], float)
        if temperature <= 0:
            raise SettingsError(f"{s}.temperature must be above 0, got {c['temperature']!r}")
        teacher = _typed(s, "teacher", c["teacher"], str, optional=True)
        return cls(teacher=teacher or None, weight=weight, temperature=temperature)


# --------------------------------------------------------------------------- export

EXPORT_CONFIG = "export.yaml"
# Keys of configs/export.yaml that are the job's inputs rather than settings, and the
# ``paths`` group its interpolations read.
EXPORT_INPUTS = ("run_dir", "name", "out_dir", "paths")


def _section(cfg: Any, section: str) -> Mapping[str, Any]:
    """``cfg`` as a plain mapping, or a :class:`SettingsError` naming ``section``."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise SettingsError(f"{section} must be a mapping of settings, got {cfg!r}")
    return cfg


def check_entry(
    raw: Any, where: str, known: set[str], required: str, what: str
) -> Mapping[str, Any]:
    """``raw`` as a mapping that sets ``required`` and no key outside ``known``; otherwise a
    :class:`SettingsError` that starts with ``where`` (a file and the entry's place in it)
    and says that ``what`` (e.g. "each variant") needs the required key."""
    if not isinstance(raw, Mapping) or not raw.get(required):
        raise SettingsError(f"{where}: {what} needs a '{required}'")
    unknown = set(raw) - known
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return raw


def _keys(
    cfg: Mapping[str, Any], section: str, known: set[str], ignored: tuple[str, ...] = ()
) -> None:
    """Refuse a key of ``cfg`` that is not ``known`` (nor ``ignored``), and a missing one."""
    unknown = sorted(set(cfg) - known - set(ignored))
    if unknown:
        raise SettingsError(
            f"unknown setting {section}.{unknown[0]}; known: {', '.join(sorted(known))}"
        )
    missing = sorted(known - set(cfg))
    if missing:
        raise SettingsError(f"{section}.{missing[0]} is missing from the config")


def _shipped_file(file: str) -> Path:
    path = config_dir() / file
    if not path.is_file():
        raise SettingsError(f"shipped config not found: {path}")
    return path


def _shipped(file: str, *keys: str) -> Any:
    """The block at ``keys`` of the shipped config ``file`` (no interpolation resolved)."""
    from omegaconf import OmegaConf

    node: Any = OmegaConf.load(_shipped_file(file))
    for key in keys:
        node = node[key]
    return node


@dataclass(frozen=True)
class QuantizationSettings:
    """How the int8 graph is built (``quantization`` in ``configs/export.yaml``, which holds
    the defaults and says what each setting does)."""

    smooth_alpha: float | None
    calibration_split: str
    calibration_items: int
    fuse: bool
    fuse_attention: bool

    @classmethod
    def from_config(cls, cfg: Any, section: str = "export.quantization") -> QuantizationSettings:
        c = _section(cfg, section)
        _keys(c, section, {f.name for f in fields(cls)})
        alpha = _typed(section, "smooth_alpha", c["smooth_alpha"], float, optional=True)
        if alpha is not None and not 0 <= alpha <= 1:
            raise SettingsError(
                f"{section}.smooth_alpha must be between 0 and 1 (or null), got {alpha!r}"
            )
        return cls(
            smooth_alpha=alpha,
            calibration_split=_typed(section, "calibration_split", c["calibration_split"], str),
            calibration_items=_typed(
                section, "calibration_items", c["calibration_items"], int, minimum=1
            ),
            fuse=_typed(section, "fuse", c["fuse"], bool),
            fuse_attention=_typed(section, "fuse_attention", c["fuse_attention"], bool),
        )

    @classmethod
    def defaults(cls) -> QuantizationSettings:
        """The shipped defaults, from ``configs/export.yaml``."""
        return cls.from_config(_shipped(EXPORT_CONFIG, "quantization"))

    @classmethod
    def with_options(cls, options: Mapping[str, Any] | None) -> QuantizationSettings:
        """The shipped defaults with ``options`` (any of the settings) put over them."""
        base = _section(_shipped(EXPORT_CONFIG, "quantization"), "export.quantization")
        return cls.from_config({**base, **dict(options or {})})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OnnxSettings:
    """The fp32 ONNX graph and its check against torch (``onnx`` in ``configs/export.yaml``)."""

    opset: int
    max_logit_diff: float

    @classmethod
    def from_config(cls, cfg: Any, section: str = "export.onnx") -> OnnxSettings:
        c = _section(cfg, section)
        _keys(c, section, {f.name for f in fields(cls)})
        return cls(
            opset=_typed(section, "opset", c["opset"], int, minimum=7),
            max_logit_diff=_typed(section, "max_logit_diff", c["max_logit_diff"], float, minimum=0),
        )


@dataclass(frozen=True)
class ExportSettings:
    """The settings of ``configs/export.yaml``, typed and checked once (its inputs
    ``run_dir``, ``name`` and ``out_dir`` are read by the export script itself)."""

    wheel: bool
    wheel_version: str
    parity_split: str
    onnx: OnnxSettings
    quantization: QuantizationSettings
    license: str

    @classmethod
    def from_config(cls, cfg: Any) -> ExportSettings:
        if hasattr(cfg, "keys"):  # the job's inputs stay unresolved: they name app paths
            cfg = {k: cfg[k] for k in cfg.keys() if k not in EXPORT_INPUTS}
        c = _section(cfg, "export")
        _keys(c, "export", {f.name for f in fields(cls)})
        return cls(
            wheel=_typed("export", "wheel", c["wheel"], bool),
            wheel_version=_typed("export", "wheel_version", c["wheel_version"], str),
            parity_split=_typed("export", "parity_split", c["parity_split"], str),
            onnx=OnnxSettings.from_config(c["onnx"], "export.onnx"),
            quantization=QuantizationSettings.from_config(c["quantization"], "export.quantization"),
            license=_typed("export", "license", c["license"], str),
        )

    @classmethod
    def defaults(cls) -> ExportSettings:
        """The shipped defaults, from ``configs/export.yaml``."""
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(_shipped(EXPORT_CONFIG), resolve=False)
        if not isinstance(cfg, dict):
            raise SettingsError(f"{config_dir() / EXPORT_CONFIG}: expected a mapping")
        return cls.from_config({k: v for k, v in cfg.items() if k not in ("defaults", "hydra")})


# ------------------------------------------------------------------------ benchmark

BENCHMARK_CONFIG = ("benchmark", "default.yaml")
BACKENDS = ("auto", "torch", "onnx")
# Top-level keys of a suite config that other code reads: the task and paths groups, the
# job's name, and the data group (checked by scrclf.evaluation.evaluate.data_settings).
BENCHMARK_OTHER = ("task", "paths", "run_name", "hydra")


def _optional_section(cfg: Mapping[str, Any], key: str, section: str) -> Mapping[str, Any] | None:
    """The mapping at ``cfg[key]``; None when it is absent, null or false (turned off)."""
    value = cfg.get(key)
    if value is None or value is False:
        return None
    return _section(value, f"{section}.{key}")


def _list(value: Any) -> list[Any]:
    """A setting that takes one value or a list of them (null or empty: none)."""
    if value in (None, "", []):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _split_names(section: str, key: str, value: Any) -> tuple[str, ...]:
    """One split name or a list of distinct ones, or a :class:`SettingsError`."""
    names = tuple(_typed(section, key, v, str) for v in _list(value))
    if not names or len(set(names)) != len(names):
        raise SettingsError(
            f"{section}.{key} must name one split or a list of distinct splits, got {value!r}"
        )
    return names


@dataclass(frozen=True)
class BootstrapSettings:
    """The cluster bootstrap of a suite's intervals (``bootstrap`` in a suite config)."""

    resamples: int
    seed: int
    confidence: float

    @classmethod
    def from_config(cls, cfg: Any, section: str = "benchmark.bootstrap") -> BootstrapSettings:
        c = _section(cfg, section)
        _keys(c, section, {f.name for f in fields(cls)})
        confidence = _typed(section, "confidence", c["confidence"], float)
        if not 0 < confidence < 1:
            raise SettingsError(
                f"{section}.confidence must lie between 0 and 1, got {confidence!r}"
            )
        return cls(
            resamples=_typed(section, "resamples", c["resamples"], int, minimum=1),
            seed=_typed(section, "seed", c["seed"], int, minimum=0),
            confidence=confidence,
        )


@dataclass(frozen=True)
class TyposSettings:
    """The typo variant: the share of words of four or more letters changed, and the seed."""

    rate: float
    seed: int


@dataclass(frozen=True)
class VariantSettings:
    """Robustness variants of the eval split (``datasets.variants``); None: not made."""

    no_finding: bool
    lowercase: bool
    typos: TyposSettings | None
    truncate_words: int | None

    @classmethod
    def from_config(cls, cfg: Any, section: str = "benchmark.datasets.variants") -> VariantSettings:
        c = _section(cfg if cfg is not None else {}, section)
        known = {"no_finding", "lowercase", "typos", "truncate"}
        unknown = sorted(set(c) - known)
        if unknown:
            raise SettingsError(
                f"unknown setting {section}.{unknown[0]}; known: {', '.join(sorted(known))}"
            )
        typos = _optional_section(c, "typos", section)
        if typos is not None:
            sub = f"{section}.typos"
            _keys(typos, sub, {"rate", "seed"})
            rate = _typed(sub, "rate", typos["rate"], float, minimum=0)
            if rate > 1:
                raise SettingsError(f"{sub}.rate must be at most 1, got {rate!r}")
            typos_settings: TyposSettings | None = TyposSettings(
                rate=rate, seed=_typed(sub, "seed", typos["seed"], int, minimum=0)
            )
        else:
            typos_settings = None
        truncate = _optional_section(c, "truncate", section)
        words = None
        if truncate is not None:
            sub = f"{section}.truncate"
            _keys(truncate, sub, {"words"})
            words = _typed(sub, "words", truncate["words"], int, minimum=1)
        return cls(
            no_finding=_typed(section, "no_finding", c.get("no_finding") or False, bool),
            lowercase=_typed(section, "lowercase", c.get("lowercase") or False, bool),
            typos=typos_settings,
            truncate_words=words,
        )


@dataclass(frozen=True)
class EraBin:
    """A range of review years, ``min`` and ``max`` inclusive, either open (None)."""

    name: str | None
    min: int | None
    max: int | None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("name", self.name), ("min", self.min), ("max", self.max))}


@dataclass(frozen=True)
class SliceSettings:
    """Subsets of the eval split by the value (or, with ``bins``, the year range) of a
    column; slices with fewer than ``min_items`` items are skipped."""

    column: str
    min_items: int
    bins: tuple[EraBin, ...] | None = None

    @classmethod
    def from_config(cls, cfg: Any, section: str, *, binned: bool = False) -> SliceSettings:
        c = _section(cfg, section)
        _keys(c, section, {"column", "min_items", *(("bins",) if binned else ())})
        bins = None
        if binned:
            raw = c["bins"]
            if not isinstance(raw, (list, tuple)) or not raw:
                raise SettingsError(f"{section}.bins must be a list of year ranges, got {raw!r}")
            bins = tuple(_era_bin(b, f"{section}.bins[{i}]") for i, b in enumerate(raw))
        return cls(
            column=_typed(section, "column", c["column"], str),
            min_items=_typed(section, "min_items", c["min_items"], int, minimum=1),
            bins=bins,
        )


def _era_bin(cfg: Any, section: str) -> EraBin:
    c = _section(cfg, section)
    unknown = sorted(set(c) - {"name", "min", "max"})
    if unknown:
        raise SettingsError(f"unknown setting {section}.{unknown[0]}; known: max, min, name")
    lo = _typed(section, "min", c.get("min"), int, optional=True)
    hi = _typed(section, "max", c.get("max"), int, optional=True)
    if lo is None and hi is None:
        raise SettingsError(f"{section} needs min, max or both")
    if lo is not None and hi is not None and lo > hi:
        raise SettingsError(f"{section}.min must be at most its max, got {lo} > {hi}")
    return EraBin(_typed(section, "name", c.get("name"), str, optional=True), lo, hi)


def era_bins() -> tuple[EraBin, ...]:
    """The era slices of the shipped default suite (``configs/benchmark/default.yaml``)."""
    slices = _section(_shipped("/".join(BENCHMARK_CONFIG), "datasets", "slices"), "slices")
    era = SliceSettings.from_config(slices["era"], "benchmark.datasets.slices.era", binned=True)
    assert era.bins is not None
    return era.bins


@dataclass(frozen=True)
class SlicesSettings:
    """The slices of the eval split (``datasets.slices``); None: not made."""

    addressee: SliceSettings | None
    era: SliceSettings | None

    @classmethod
    def from_config(cls, cfg: Any, section: str = "benchmark.datasets.slices") -> SlicesSettings:
        c = _section(cfg if cfg is not None else {}, section)
        unknown = sorted(set(c) - {"addressee", "era"})
        if unknown:
            raise SettingsError(f"unknown setting {section}.{unknown[0]}; known: addressee, era")
        addressee = _optional_section(c, "addressee", section)
        era = _optional_section(c, "era", section)
        return cls(
            addressee=None
            if addressee is None
            else SliceSettings.from_config(addressee, f"{section}.addressee"),
            era=None
            if era is None
            else SliceSettings.from_config(era, f"{section}.era", binned=True),
        )


@dataclass(frozen=True)
class SystemsSettings:
    """What a suite scores (``systems``): trained models, baselines, and how models run."""

    models: tuple[str, ...]
    baselines: tuple[str, ...]
    baseline_options: dict[str, Any]
    backend: str
    batch_size: int

    @classmethod
    def from_config(cls, cfg: Any, section: str = "benchmark.systems") -> SystemsSettings:
        c = _section(cfg, section)
        _keys(c, section, {f.name for f in fields(cls)})
        options = c["baseline_options"] or {}
        if not isinstance(options, Mapping):
            raise SettingsError(f"{section}.baseline_options must be a mapping, got {options!r}")
        return cls(
            models=tuple(str(m) for m in _list(c["models"])),
            baselines=tuple(str(b) for b in _list(c["baselines"])),
            baseline_options={str(k): v for k, v in options.items()},
            backend=_typed(section, "backend", c["backend"], str, choices=BACKENDS),
            batch_size=_typed(section, "batch_size", c["batch_size"], int, minimum=1),
        )


@dataclass(frozen=True)
class BenchmarkSettings:
    """A benchmark suite config (``configs/benchmark/``), typed and checked once; the
    default suite holds every default and says what each setting does. The ``data`` group's
    columns are read by :func:`scrclf.evaluation.evaluate.data_settings`."""

    suite: str
    # The splits the baselines are fitted on, together (one or several).
    train_split: tuple[str, ...]
    eval_split: str
    external: tuple[str, ...]
    # The column map of the external files (checked by scrclf.data.columns.ColumnMap).
    external_columns: Mapping[str, Any] | str | None
    systems: SystemsSettings
    variants: VariantSettings
    slices: SlicesSettings
    metrics: tuple[str, ...]
    bootstrap: BootstrapSettings
    profile: bool
    plots: bool
    report_root: str
    out_dir: str | None
    # The double-coding file for model-vs-human agreement (None: not measured).
    agreement_file: str | None

    @classmethod
    def from_config(cls, cfg: Any) -> BenchmarkSettings:
        s = "benchmark"
        c = _section(cfg, s)
        known = {
            "suite", "data", "systems", "datasets", "metrics", "bootstrap", "profile", "plots",
            "report_root", "out_dir", "agreement",
        }  # fmt: skip
        _keys(c, s, known, ignored=BENCHMARK_OTHER)
        data = _section(c["data"], f"{s}.data")
        for key in ("train_split", "eval_split", "external", "external_columns"):
            if key not in data:
                raise SettingsError(f"{s}.data.{key} is missing from the config")
        datasets = _section(c["datasets"] if c["datasets"] is not None else {}, f"{s}.datasets")
        unknown = sorted(set(datasets) - {"variants", "slices"})
        if unknown:
            raise SettingsError(
                f"unknown setting {s}.datasets.{unknown[0]}; known: slices, variants"
            )
        agreement = _section(c["agreement"] or {"file": None}, f"{s}.agreement")
        _keys(agreement, f"{s}.agreement", {"file"})
        metrics = tuple(str(m) for m in _list(c["metrics"]))
        if not metrics:
            raise SettingsError(f"{s}.metrics must name at least one metric")
        return cls(
            suite=_typed(s, "suite", c["suite"], str),
            train_split=_split_names(f"{s}.data", "train_split", data["train_split"]),
            eval_split=_typed(f"{s}.data", "eval_split", data["eval_split"], str),
            external=tuple(str(p) for p in _list(data["external"])),
            external_columns=data["external_columns"],
            systems=SystemsSettings.from_config(c["systems"]),
            variants=VariantSettings.from_config(datasets.get("variants")),
            slices=SlicesSettings.from_config(datasets.get("slices")),
            metrics=metrics,
            bootstrap=BootstrapSettings.from_config(c["bootstrap"]),
            profile=_typed(s, "profile", c["profile"], bool),
            plots=_typed(s, "plots", c["plots"], bool),
            report_root=_typed(s, "report_root", c["report_root"], str),
            out_dir=_typed(s, "out_dir", c["out_dir"], str, optional=True),
            agreement_file=_typed(f"{s}.agreement", "file", agreement["file"], str, optional=True),
        )


# ------------------------------------------------------------------------- evaluate

EVALUATE_CONFIG = "evaluate.yaml"
DATA_CONFIG = ("data", "scr_recs.yaml")
# The column names and character limit of the corpus, read from the data config a model
# was trained with, or from the shipped corpus config when a model folder has none.
DATA_COLUMNS = ("id_column", "text_column", "pair_column", "group_column", "max_chars")


def data_columns() -> dict[str, Any]:
    """The column names and ``max_chars`` of the shipped ``configs/data/scr_recs.yaml``."""
    return dict(_data_columns())


@functools.lru_cache(maxsize=1)
def _data_columns() -> tuple[tuple[str, Any], ...]:
    # Plain YAML: the runtime install (scrclf predict) has PyYAML but not OmegaConf, and these
    # keys hold no interpolation.
    import yaml

    node = yaml.safe_load(_shipped_file("/".join(DATA_CONFIG)).read_text(encoding="utf-8"))
    return tuple((key, node[key]) for key in DATA_COLUMNS)


@dataclass(frozen=True)
class EvaluateSettings:
    """``configs/evaluate.yaml``, typed and checked once (the file holds the defaults and
    says what each setting does)."""

    model_path: str
    split: str
    file: str | None
    data_dir: str | None
    report_dir: str | None
    report_root: str
    recalibrate: bool
    validation_file: str | None
    profile: bool
    plots: bool
    backend: str
    batch_size: int
    bootstrap: BootstrapSettings
    # The column map of ``file`` and ``validation_file`` (checked by
    # scrclf.data.columns.ColumnMap.from_config).
    columns: Mapping[str, Any] | str | None

    @classmethod
    def from_config(cls, cfg: Any) -> EvaluateSettings:
        s = "evaluate"
        c = _section(cfg, s)
        _keys(c, s, {f.name for f in fields(cls)}, ignored=("paths", "run_name", "hydra"))
        return cls(
            model_path=_typed(s, "model_path", c["model_path"], str),
            split=_typed(s, "split", c["split"], str),
            file=_typed(s, "file", c["file"], str, optional=True),
            data_dir=_typed(s, "data_dir", c["data_dir"], str, optional=True),
            report_dir=_typed(s, "report_dir", c["report_dir"], str, optional=True),
            report_root=_typed(s, "report_root", c["report_root"], str),
            recalibrate=_typed(s, "recalibrate", c["recalibrate"], bool),
            validation_file=_typed(s, "validation_file", c["validation_file"], str, optional=True),
            profile=_typed(s, "profile", c["profile"], bool),
            plots=_typed(s, "plots", c["plots"], bool),
            backend=_typed(s, "backend", c["backend"], str, choices=BACKENDS),
            batch_size=_typed(s, "batch_size", c["batch_size"], int, minimum=1),
            bootstrap=BootstrapSettings.from_config(c["bootstrap"], f"{s}.bootstrap"),
            columns=c["columns"],
        )

    @staticmethod
    def default_split() -> str:
        """``split`` of the shipped ``configs/evaluate.yaml``."""
        return str(_shipped(EVALUATE_CONFIG, "split"))


# --------------------------------------------------------------------------- search

SEARCH_CONFIG = ("search", "default.yaml")
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class SearchSettings:
    """A search config (``configs/search/``), typed and checked once; ``default.yaml``
    holds every default and says what each setting does. The space itself (``params``) is
    checked by :func:`scrclf.training.search.check_space`."""

    study_name: str
    n_trials: int
    direction: str
    metric: str
    seed: int | None
    storage: str | None
    pruning: bool
    timeout_s: float | None
    overrides: tuple[str, ...]
    params: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: Any) -> SearchSettings:
        try:
            return cls._from_config(cfg)
        except SearchConfigError:
            raise
        except SettingsError as err:
            raise SearchConfigError(str(err)) from None

    @classmethod
    def _from_config(cls, cfg: Any) -> SearchSettings:
        s = "search"
        c = _section(cfg, s)
        _keys(c, s, {f.name for f in fields(cls)})
        params = c["params"] if c["params"] is not None else {}
        if not isinstance(params, Mapping):
            raise SearchConfigError(f"{s}.params must be a mapping of parameters, got {params!r}")
        overrides = _list(c["overrides"])
        return cls(
            study_name=_typed(s, "study_name", c["study_name"], str),
            n_trials=_typed(s, "n_trials", c["n_trials"], int, minimum=1),
            direction=_typed(s, "direction", c["direction"], str, choices=DIRECTIONS),
            metric=_typed(s, "metric", c["metric"], str),
            seed=_typed(s, "seed", c["seed"], int, minimum=0, optional=True),
            storage=_typed(s, "storage", c["storage"], str, optional=True),
            pruning=_typed(s, "pruning", c["pruning"], bool),
            timeout_s=_typed(s, "timeout_s", c["timeout_s"], float, minimum=0, optional=True),
            overrides=tuple(str(o) for o in overrides),
            params={str(k): v for k, v in params.items()},
        )

    @classmethod
    def with_options(cls, options: Mapping[str, Any] | None) -> SearchSettings:
        """The shipped ``configs/search/default.yaml`` with the settings of ``options``
        (each replaced whole: ``params`` given is the whole space) put over it."""
        base = _section(_shipped("/".join(SEARCH_CONFIG)), "search")
        return cls.from_config({**base, **dict(options or {})})


def compose(config_name: str = "train", overrides: list[str] | None = None) -> Any:
    """A config composed from the shipped defaults with Hydra overrides, outside a Hydra app
    (benchmarks, notebooks): ``compose(overrides=["trainer=gpu_fast"]).trainer``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
