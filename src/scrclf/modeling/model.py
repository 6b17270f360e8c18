"""The multi-task classifier: any encoder, masked mean pooling, one head per task (linear
over the pooled text, or attending over the tokens once per label).

``ScrClfModel`` is a native Hugging Face model. Importing :mod:`scrclf` registers it with
``AutoConfig`` and ``AutoModel``, so ``AutoModel.from_pretrained(dir)`` works without
``trust_remote_code``. The encoder is rebuilt from the config stored in the model
directory: nothing is downloaded when a saved model is loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from scrclf import hooks
from scrclf.errors import SettingsError
from scrclf.modeling.frozen import FrozenBottom
from scrclf.modeling.keys import DEFAULT_LABEL_ATTENTION_KEYS, check_label_attention_keys
from scrclf.tasks import (
    BESIDE_TARGET_PREFIXES,
    TEACHER_PREFIX,
    WIDE_OFFSET_PREFIX,
    TaskSet,
    TaskSpec,
)

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls")
# Bigram ids are hashed as ``(first * WIDE_HASH_MULTIPLIER + second) mod buckets``; the
# multiplier is a prime larger than any vocabulary, so distinct bigrams rarely collide.
WIDE_HASH_MULTIPLIER = 1_000_003
WIDE_KEYS = {
    "buckets",
    "ngrams",
    "mode",
    "C",
    "mix",
    "text_only",
    "sep_token_id",
    "residual",
    "residual_folds",
    "intercept",
}
# joint: trained with the encoder by the optimizer, added to the heads' logits.
# logreg: fitted before training as a logistic regression over IDF-weighted n-grams and held
# fixed; the encoder learns alone, and the weight of the wide logits per task is fitted on
# validation after training (``mix``).
WIDE_MODES = ("joint", "logreg")


def check_task_list(
    setting: str, value: Any, task_names: Sequence[str] | None = None, nullable: bool = True
) -> list[str]:
    """A setting that names tasks: a list of distinct task names, each one of ``task_names``
    when those are given (``null`` is an empty list where ``nullable``)."""
    if value is None and nullable:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        kind = "null or a list" if nullable else "a list"
        raise SettingsError(f"{setting} must be {kind} of task names, got {value!r}")
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        raise SettingsError(f"{setting} names a task twice: {names}")
    unknown = set(names) - set(task_names) if task_names else set()
    if unknown:
        raise SettingsError(
            f"{setting} names unknown tasks {sorted(unknown)}; tasks are {list(task_names or ())}"
        )
    return names


def check_token_id(setting: str, value: Any) -> int | None:
    """A token id setting: a non-negative integer, or None when unset."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise SettingsError(f"{setting} must be a token id, got {value!r}")
    return value


def check_label_attention(value: Any, task_names: Sequence[str] | None = None) -> list[str] | None:
    """The ``label_attention`` setting: the names of the tasks whose head attends over the
    tokens once per label, or None when every head is linear over the pooled text."""
    return check_task_list("model.label_attention", value, task_names) or None


def check_text_only_heads(
    value: Any, sep_token_id: Any, task_names: Sequence[str] | None = None
) -> tuple[list[str] | None, int | None]:
    """The ``text_only_heads`` setting (the tasks whose head reads the first segment's tokens
    alone: the recommendation text of a text-finding pair, not its finding) and the
    separator that ends that segment, checked; ``(None, None)`` when no head reads the text
    alone."""
    names = check_task_list("model.text_only_heads", value, task_names)
    if not names:
        return None, None
    sep = check_token_id("sep_token_id", sep_token_id)
    if sep is None:
        raise SettingsError(
            "model.text_only_heads needs the tokenizer's separator (sep_token_id), which "
            "build_model takes from the tokenizer"
        )
    return names, sep


def check_wide(wide: Any, task_names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The ``wide`` setting checked and completed, or None when off.

    ``{"buckets": int, "ngrams": 1 | 2, "mode": "joint" | "logreg", "C": float,
    "mix": {task: float} | None}``, plus ``text_only`` (the tasks whose wide logits read the
    first segment alone, the recommendation text without its finding) and ``sep_token_id``
    (the tokenizer's separator, which ends that segment) when any task reads the text alone.
    With ``task_names``, ``text_only`` may name only those tasks.
    """
    if wide is None or wide is False:
        return None
    if not isinstance(wide, dict):
        raise SettingsError(f"model.wide must be null or a mapping, got {wide!r}")
    unknown = set(wide) - WIDE_KEYS
    if unknown:
        raise SettingsError(
            f"model.wide: unknown keys {sorted(unknown)}; known: {sorted(WIDE_KEYS)}"
        )
    buckets, ngrams = wide.get("buckets"), wide.get("ngrams", 2)
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
        raise SettingsError(f"model.wide.buckets must be a positive integer, got {buckets!r}")
    if ngrams not in (1, 2):
        raise SettingsError(f"model.wide.ngrams must be 1 or 2, got {ngrams!r}")
    mode = wide.get("mode", "joint")
    if mode not in WIDE_MODES:
        raise SettingsError(f"model.wide.mode must be one of {WIDE_MODES}, got {mode!r}")
    c = wide.get("C", 4.0)
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
        raise SettingsError(f"model.wide.C must be a positive number, got {c!r}")
    mix = wide.get("mix")
    if mix is not None:
        if not isinstance(mix, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in mix.values()
        ):
            raise SettingsError(f"model.wide.mix must map task names to weights >= 0, got {mix!r}")
        mix = {str(k): float(v) for k, v in mix.items()}
    text_only = check_task_list(
        "model.wide.text_only", wide.get("text_only") or [], task_names, nullable=False
    )
    sep = check_token_id("model.wide.sep_token_id", wide.get("sep_token_id"))
    residual = check_task_list(
        "model.wide.residual", wide.get("residual") or [], task_names, nullable=False
    )
    folds = wide.get("residual_folds", 5)
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise SettingsError(f"model.wide.residual_folds must be an integer >= 2, got {folds!r}")
    if residual and mode != "logreg":
        raise SettingsError(
            "model.wide.residual needs mode: logreg (a wide part fitted before training)"
        )
    intercept = wide.get("intercept", False)
    if not isinstance(intercept, bool):
        raise SettingsError(f"model.wide.intercept must be true or false, got {intercept!r}")
    if intercept and mode != "logreg":
        raise SettingsError(
            "model.wide.intercept needs mode: logreg (the logistic regressions' intercepts)"
        )
    if text_only and sep is None:
        raise SettingsError(
            "model.wide.text_only needs the tokenizer's separator (model.wide.sep_token_id), "
            "which build_model sets from model.tokenizer"
        )
    out = {
        "buckets": int(buckets),
        "ngrams": int(ngrams),
        "mode": mode,
        "C": float(c),
        "mix": mix,
    }
    if text_only:
        # Kept out of the config when empty, so a model saved before the setting existed
        # and one saved without it have the same config.
        out["text_only"] = text_only
        out["sep_token_id"] = sep
    if residual:
        out["residual"] = residual
        out["residual_folds"] = int(folds)
    if intercept:
        # Absent when off: a model saved before the setting existed adds no intercepts.
        out["intercept"] = True
    return out


def first_segment(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int):
    """The attention mask of the first segment of each sequence: its tokens up to and with
    the first separator (the recommendation text of a text-finding pair; the whole sequence
    when there is no second segment)."""
    is_sep = (input_ids == sep_token_id).to(torch.int64)
    before = torch.cumsum(is_sep, dim=1) - is_sep  # separators strictly before each token
    return attention_mask * (before == 0).to(attention_mask.dtype)


def wide_features(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, buckets: int, ngrams: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket ids ``[batch, features]`` of every token and neighbouring pair, and their 0/1
    weights (padding and pairs that touch padding weigh 0)."""
    mask = attention_mask.to(torch.float32)
    ids = [torch.remainder(input_ids, buckets)]
    weights = [mask]
    if ngrams >= 2:
        pairs = input_ids[:, :-1] * WIDE_HASH_MULTIPLIER + input_ids[:, 1:]
        ids.append(torch.remainder(pairs, buckets))
        weights.append(mask[:, :-1] * mask[:, 1:])
    return torch.cat(ids, dim=1), torch.cat(weights, dim=1)


class ScrClfConfig(PretrainedConfig):
    """Config of :class:`ScrClfModel`: the encoder's own config plus the task heads."""

    model_type = "scrclf"
    # The Trainer's predictions hold the logits alone.
    keys_to_ignore_at_inference = ["sentence_embedding"]

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        tasks: list[dict[str, Any]] | None = None,
        pooling: str = "mean",
        dropout: float = 0.1,
        max_seq_length: int = 256,
        text_pair: bool = True,
        wide: dict[str, Any] | None = None,
        label_attention: list[str] | None = None,
        label_attention_keys: str = DEFAULT_LABEL_ATTENTION_KEYS,
        text_only_heads: list[str] | None = None,
        sep_token_id: int | None = None,
        **kwargs,
    ):
        self.encoder = dict(encoder) if encoder else {"model_type": "bert"}
        self.tasks = [dict(t) for t in (tasks or [])]
        if pooling not in POOLING_MODES:
            raise SettingsError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.pooling = pooling
        self.dropout = float(dropout)
        self.max_seq_length = int(max_seq_length)
        self.text_pair = bool(text_pair)
        task_names = [t["name"] for t in self.tasks]
        self.wide = check_wide(wide, task_names)
        self.label_attention = check_label_attention(label_attention, task_names)
        self.label_attention_keys = check_label_attention_keys(label_attention_keys)
        self.text_only_heads, self.sep_token_id = check_text_only_heads(
            text_only_heads, sep_token_id, task_names
        )
        for derived in ("head_id2label", "head_label2id", "id2label", "label2id", "num_labels"):
            if self.tasks:
                kwargs.pop(derived, None)
        super().__init__(**kwargs)
        if self.tasks:
            self.set_label_maps()

    def set_label_maps(self) -> None:
        """The label names of every head: ``head_id2label[task][i]`` and ``head_label2id``
        per head, and Hugging Face's single ``id2label``/``label2id`` over all outputs in
        head order, each named ``task.label``."""
        heads = [(t.name, t.labels) for t in self.task_set]
        self.head_id2label = {name: dict(enumerate(labels)) for name, labels in heads}
        self.head_label2id = {
            name: {lab: i for i, lab in enumerate(labels)} for name, labels in heads
        }
        flat = [f"{name}.{label}" for name, labels in heads for label in labels]
        self.id2label = dict(enumerate(flat))
        self.label2id = {label: i for i, label in enumerate(flat)}

    @property
    def task_set(self) -> TaskSet:
        return TaskSet.from_config(self.tasks)

    def encoder_config(self) -> PretrainedConfig:
        enc = dict(self.encoder)
        model_type = enc.pop("model_type")
        return AutoConfig.for_model(model_type, **enc)


@dataclass
class ScrClfOutput(ModelOutput):
    """``logits`` holds one tensor per task, in the order of ``config.tasks``;
    ``sentence_embedding`` the pooled encoder output the heads read (``[batch, hidden]``).

    The embedding comes first, so ``pipeline("feature-extraction")`` (which takes the first
    tensor of the output) returns it; the Trainer leaves it out of predictions
    (``keys_to_ignore_at_inference``)."""

    loss: torch.Tensor | None = None
    sentence_embedding: torch.Tensor | None = None
    logits: tuple[torch.Tensor, ...] | None = None


def soft_loss(
    student: torch.Tensor, teacher: torch.Tensor, multi_label: bool, temperature: float
) -> torch.Tensor:
    """The loss of ``student`` logits against a teacher's probabilities, both at
    ``temperature``, scaled by its square so the gradients keep their size as it changes:
    binary cross-entropy per label for a multi-label task, KL divergence otherwise."""
    t = float(temperature)
    s, q = student.float() / t, teacher.float() / t
    if multi_label:
        loss = nn.functional.binary_cross_entropy_with_logits(s, q.sigmoid())
    else:
        loss = nn.functional.kl_div(
            nn.functional.log_softmax(s, dim=-1),
            nn.functional.log_softmax(q, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    return loss * (t * t)


def consistency_loss(first: torch.Tensor, second: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """R-drop's term: the symmetric KL divergence between two passes' predictions of the same
    items, per label (Bernoulli) for a multi-label task, over the classes otherwise; a mean
    over items (and labels)."""
    a, b = first.float(), second.float()
    if multi_label:
        pa, pb = a.sigmoid(), b.sigmoid()
        # KL(p||q) + KL(q||p) for Bernoulli p, q reduces to (p - q)(logit p - logit q).
        return ((pa - pb) * (a - b)).mean() / 2
    la, lb = nn.functional.log_softmax(a, dim=-1), nn.functional.log_softmax(b, dim=-1)
    return ((la.exp() - lb.exp()) * (la - lb)).sum(dim=-1).mean() / 2


def _in_heads(model: nn.Module, module: nn.Module) -> bool:
    """Whether ``module`` belongs to one of ``model``'s task heads."""
    heads = getattr(model, "heads", None)
    return heads is not None and any(module is m for m in heads.modules())


def build_encoder(config: PretrainedConfig) -> PreTrainedModel:
    """An untrained encoder from its config, without the BERT-style pooler where possible."""
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp(min=1e-9)
    return summed / count


class LabelAttentionHead(nn.Module):
    """A head that reads the tokens once per label instead of one pooled vector.

    Label ``k`` scores every token with its own query over the token keys ``tanh(W h)``, takes
    the attention-weighted mean of the token states (padding excluded) and scores it with its
    own weight vector: ``logit_k = w_k . sum_t softmax_t(q_k . tanh(W h_t)) h_t + b_k``.
    A label whose evidence is a phrase (a training module, a case-file audit) is then scored
    on that phrase rather than on the mean of a text that may ask for several things.

    With ``project=False`` the head has no ``W`` of its own: the caller passes the keys, from
    a projection shared by several heads or the token states themselves.
    """

    def __init__(self, hidden: int, num_labels: int, project: bool = True):
        super().__init__()
        self.proj = nn.Linear(hidden, hidden) if project else None
        self.query = nn.Parameter(torch.empty(num_labels, hidden))
        self.weight = nn.Parameter(torch.empty(num_labels, hidden))
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        dropout: nn.Module,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.proj is not None:
            keys = torch.tanh(self.proj(hidden))
        elif keys is None:
            raise TypeError("this attending head has no projection of its own: pass the keys")
        scores = torch.einsum("bld,kd->bkl", keys, self.query.to(keys.dtype))
        padding = (attention_mask == 0).unsqueeze(1)
        scores = scores.masked_fill(padding, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        per_label = torch.einsum("bkl,bld->bkd", weights, hidden)
        return (dropout(per_label) * self.weight.to(per_label.dtype)).sum(dim=-1) + self.bias


class ScrClfModel(PreTrainedModel):
    config_class = ScrClfConfig
    base_model_prefix = "scrclf"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # The loss is a per-batch mean computed here; the Trainer must not rescale it.
    accepts_loss_kwargs = False

    def __init__(self, config: ScrClfConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder_config())
        hidden = self.encoder.config.hidden_size
        tasks = config.task_set
        self.task_names = tasks.names
        self.dropout = nn.Dropout(config.dropout)
        attending = set(config.label_attention or ())
        keys = config.label_attention_keys
        # One projection of the tokens for every attending head (label_attention_keys: shared).
        self.label_keys = nn.Linear(hidden, hidden) if attending and keys == "shared" else None
        self.heads = nn.ModuleDict(
            {
                t.name: LabelAttentionHead(hidden, t.num_labels, project=keys == "per_task")
                if t.name in attending
                else nn.Linear(hidden, t.num_labels)
                for t in tasks
            }
        )
        self._label_counts = [t.num_labels for t in tasks]
        # The wide part: a linear model over hashed token unigrams and bigrams, computed from
        # the token ids inside the graph and added to the heads' logits.
        self.wide = (
            nn.Embedding(config.wide["buckets"], sum(self._label_counts)) if config.wide else None
        )
        if self.wide is not None and config.wide and config.wide["mode"] == "logreg":
            # Fitted before training (scrclf.modeling.wide) and held fixed.
            self.wide.weight.requires_grad_(False)
            self.register_buffer("wide_idf", torch.ones(config.wide["buckets"]))
            if config.wide.get("intercept"):
                # The logistic regressions' intercepts, one per label (fitted with the rest).
                self.register_buffer("wide_bias", torch.zeros(sum(self._label_counts)))
        for t in tasks:
            weights = t.class_weights
            tensor = torch.tensor(weights, dtype=torch.float32) if weights else torch.empty(0)
            # Not saved with the weights: class weights live in the config.
            self.register_buffer(f"class_weights_{t.name}", tensor, persistent=False)
        self._task_specs = {t.name: t for t in tasks}
        # (weight, temperature) of the teacher's soft targets while training with
        # distillation (scrclf.training.distill); not part of the saved model.
        self.distillation: tuple[float, float] | None = None
        # Regularisation of the training loss (trainer.label_smoothing, trainer.rdrop); set
        # by the training run, not part of the saved model.
        self.label_smoothing = 0.0
        self.rdrop = 0.0
        # The bottom of the encoder held fixed while training (trainer.freeze_layers); set
        # by the training run, not part of the saved model.
        self._bottom: FrozenBottom | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        encoder_config = getattr(getattr(self, "encoder", None), "config", None)
        std = getattr(encoder_config, "initializer_range", 0.02)
        if module is getattr(self, "wide", None):
            module.weight.data.zero_()
        elif isinstance(module, LabelAttentionHead):
            for param in (module.query, module.weight):
                param.data.normal_(mean=0.0, std=std)
            module.bias.data.zero_()
        elif isinstance(module, nn.Linear) and (
            _in_heads(self, module) or module is getattr(self, "label_keys", None)
        ):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif hasattr(self, "encoder") and hasattr(self.encoder, "_init_weights"):
            self.encoder._init_weights(module)

    def param_groups(
        self,
        learning_rate: float,
        weight_decay: float,
        head_learning_rate: float | None = None,
        layer_lr_decay: float | None = None,
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the one weight-decay and learning-rate rule of every loop.

        Weight matrices decay; biases and normalisation weights (one-dimensional, or named
        ``norm``) do not. The heads and the wide part learn at ``head_learning_rate`` when it
        is given. With ``layer_lr_decay`` (between 0 and 1), the top encoder layer learns at
        ``learning_rate`` and each layer below at ``layer_lr_decay`` times the one above; the
        embeddings are one step below the lowest layer.
        """
        depth_of = self._layer_depths() if layer_lr_decay else {}
        top = max(depth_of.values(), default=0)
        groups: dict[tuple[bool, bool, int], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            decays = param.ndim >= 2 and "norm" not in name.lower()
            is_head = name.startswith(("heads.", "label_keys.", "wide."))
            depth = top if is_head else depth_of.get(name, top)
            groups.setdefault((is_head, decays, depth), []).append(param)
        out = []
        for (is_head, decays, depth), params in sorted(groups.items(), key=lambda kv: kv[0]):
            if is_head and head_learning_rate:
                lr = head_learning_rate
            elif layer_lr_decay:
                lr = learning_rate * float(layer_lr_decay) ** (top - depth)
            else:
                lr = learning_rate
            out.append(
                {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": lr}
            )
        return out

    def freeze_encoder(self, layers: int | None, word_embeddings: bool = False) -> None:
        """Hold the embeddings and the bottom ``layers`` encoder layers fixed while training.

        Their parameters get no gradients and they stay in eval mode (no dropout) while the
        rest trains; their outputs are computed once per distinct training item and kept
        (:class:`scrclf.modeling.frozen.FrozenBottom`). ``None`` trains every layer.

        ``word_embeddings`` holds only the token embedding matrix fixed (it gets no
        gradient and no optimizer update); the rest of the embeddings module still trains,
        dropout included. Called again, the earlier choices are undone first.
        """
        if self._bottom is not None:
            self._bottom.release()
            self._bottom = None
        self.encoder.get_input_embeddings().weight.requires_grad_(not word_embeddings)
        if layers is not None:
            self._bottom = FrozenBottom(self.encoder, layers)
        self.train(self.training)

    def _encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._bottom is not None and self.training:
            return self._bottom.encode(self.encoder, inputs)
        return self.encoder(**inputs).last_hidden_state

    def train(self, mode: bool = True) -> ScrClfModel:
        super().train(mode)
        bottom = getattr(self, "_bottom", None)
        for module in bottom.modules if bottom is not None else ():
            module.train(False)
        return self

    def _layer_depths(self) -> dict[str, int]:
        """Depth of each encoder parameter: 0 for the embeddings, i + 1 for layer i."""
        depths: dict[str, int] = {}
        pattern = re.compile(r"\.layers?\.(\d+)\.")
        for name, _ in self.named_parameters():
            if not name.startswith("encoder."):
                continue
            match = pattern.search(name)
            if match:
                depths[name] = int(match.group(1)) + 1
            elif ".embeddings." in name:
                depths[name] = 0
        top = max(depths.values(), default=0)
        for name, _ in self.named_parameters():
            if name.startswith("encoder.") and name not in depths:
                depths[name] = top  # final norms, relative position biases
        return depths

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    @classmethod
    def from_encoder(cls, encoder_path: str, tasks: TaskSet, **config_kwargs) -> ScrClfModel:
        """A new classifier over a pretrained encoder stored at ``encoder_path``."""
        try:
            encoder = AutoModel.from_pretrained(encoder_path, add_pooling_layer=False)
        except TypeError:
            encoder = AutoModel.from_pretrained(encoder_path)
        enc_cfg = encoder.config.to_dict()
        config = ScrClfConfig(
            encoder=_slim_encoder_config(enc_cfg), tasks=tasks.to_list(), **config_kwargs
        )
        return cls(config, encoder=encoder)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, attention_mask)

    def label_keys_of(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The token keys the attending heads share: the shared projection's, the token
        states themselves, or None where each head projects the tokens on its own."""
        if self.label_keys is not None:
            return torch.tanh(self.label_keys(hidden))
        if self.config.label_attention and self.config.label_attention_keys == "tokens":
            return hidden
        return None

    def wide_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The wide part's logits for all tasks, ``[batch, sum of labels]``.

        Each token id and (with ``ngrams: 2``) each pair of neighbouring ids picks a bucket;
        the bucket vectors of an item are summed, weighted by the bucket's IDF (logreg mode;
        1 otherwise), and divided by the Euclidean norm of the weights, as a length-normalised
        bag of n-grams. The tasks in ``text_only`` read the bag of the first segment's n-grams
        (:func:`first_segment`) instead of the whole sequence's. With ``intercept`` each label
        adds its logistic regression's intercept.
        """
        assert self.wide is not None and self.config.wide is not None
        wide = self.config.wide
        features, weight = wide_features(input_ids, attention_mask, wide["buckets"], wide["ngrams"])
        vectors = self.wide(features)
        dtype = self.wide.weight.dtype
        idf = getattr(self, "wide_idf", None)
        idf = idf[features] if isinstance(idf, torch.Tensor) else None

        def bag(weight: torch.Tensor) -> torch.Tensor:
            weight = weight.to(dtype)
            if idf is not None:
                weight = weight * idf
            summed = (vectors * weight.unsqueeze(-1)).sum(dim=1)
            norm = (weight * weight).sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()
            return summed / norm

        logits = bag(weight)
        text_only = set(wide.get("text_only") or ())
        if text_only:
            # The same n-grams, those of the first segment alone (the recommendation text).
            mask = first_segment(input_ids, attention_mask, wide["sep_token_id"])
            _, text_weight = wide_features(input_ids, mask, wide["buckets"], wide["ngrams"])
            columns = torch.tensor(
                [
                    name in text_only
                    for name, count in zip(self.task_names, self._label_counts, strict=True)
                    for _ in range(count)
                ],
                device=logits.device,
            )
            logits = torch.where(columns, bag(text_weight), logits)
        if wide.get("intercept"):
            bias = self.get_buffer("wide_bias")
            logits = logits + bias.to(logits.dtype)
        return logits

    def wide_mix(self) -> list[float]:
        """The weight of the wide logits per task: 1 when trained jointly; in logreg mode the
        fitted weights, 0 until they are fitted (the encoder trains alone)."""
        wide = self.config.wide or {}
        default = 1.0 if wide.get("mode", "joint") == "joint" else 0.0
        mix = wide.get("mix") or {}
        return [float(mix.get(name, default)) for name in self.task_names]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        return_dict: bool | None = None,
        **task_targets: torch.Tensor,
    ) -> ScrClfOutput | tuple:
        """Logits per task; with targets (named like the tasks), the weighted loss too. With a
        teacher's logits (``teacher_<task>``) and :attr:`distillation` set, each task's loss
        mixes the annotated targets' loss with the loss on the teacher's probabilities."""
        if attention_mask is None:
            if input_ids is None:
                raise TypeError("input_ids is required")
            attention_mask = torch.ones_like(input_ids)
        enc_kwargs: dict[str, torch.Tensor] = {"attention_mask": attention_mask}
        if input_ids is not None:
            enc_kwargs["input_ids"] = input_ids
        if token_type_ids is not None:
            enc_kwargs["token_type_ids"] = token_type_ids
        targets = dict(labels or {})
        targets.update({k: v for k, v in task_targets.items() if k in self._task_specs})
        beside = {
            prefix: {
                k[len(prefix) :]: v
                for k, v in task_targets.items()
                if k.startswith(prefix) and k[len(prefix) :] in self._task_specs
            }
            for prefix in BESIDE_TARGET_PREFIXES
        }
        teacher, offsets = beside[TEACHER_PREFIX], beside[WIDE_OFFSET_PREFIX]
        unknown = (
            set(task_targets)
            - set(self._task_specs)
            - {prefix + k for prefix, found in beside.items() for k in found}
        )
        if unknown:
            raise TypeError(
                f"forward() got unexpected arguments {sorted(unknown)}; "
                f"task targets are {self.task_names}, teacher logits teacher_<task>, "
                "out-of-fold wide logits wide_offset_<task>"
            )
        if teacher and self.distillation is None:
            raise TypeError("teacher logits given, but distillation is not set on the model")
        # R-drop: the batch runs twice in one pass, with different dropout masks.
        twice = bool(self.training and self.rdrop > 0 and targets)
        if twice:
            enc_kwargs = {k: torch.cat([v, v]) for k, v in enc_kwargs.items()}
        hidden = self._encode(enc_kwargs)
        mask = enc_kwargs["attention_mask"]
        embedding = self.pool(hidden, mask)
        pooled = self.dropout(embedding)
        keys = self.label_keys_of(hidden)
        text_only = set(self.config.text_only_heads or ())
        text_mask = text_pooled = None
        if text_only:
            # The heads in text_only_heads read the first segment (the recommendation text).
            if "input_ids" not in enc_kwargs:
                raise TypeError("heads that read the text alone need input_ids")
            text_mask = first_segment(enc_kwargs["input_ids"], mask, self.config.sep_token_id)
            text_pooled = self.dropout(self.pool(hidden, text_mask))

        def head_logits(name: str) -> torch.Tensor:
            head, reads_text = self.heads[name], name in text_only
            if isinstance(head, LabelAttentionHead):
                return head(hidden, text_mask if reads_text else mask, self.dropout, keys)
            return head(text_pooled if reads_text else pooled)

        logits = tuple(head_logits(name) for name in self.task_names)
        if offsets:
            # A residual task's logits while training: the encoder's plus the item's
            # out-of-fold wide logits (model.wide.residual), in place of the wide part's own.
            logits = tuple(
                a
                if name not in offsets
                else a + (torch.cat([offsets[name]] * 2) if twice else offsets[name]).to(a.dtype)
                for a, name in zip(logits, self.task_names, strict=True)
            )
        mix = [
            0.0 if name in offsets else m
            for name, m in zip(self.task_names, self.wide_mix(), strict=True)
        ]
        if self.wide is not None:
            if input_ids is None:
                raise TypeError("the wide part needs input_ids")
            wide = self.wide_logits(input_ids, attention_mask).to(logits[0].dtype)
            if twice:
                wide = torch.cat([wide, wide])
            parts = torch.split(wide, self._label_counts, dim=1)
            logits = tuple(
                a if m == 0 else a + m * b for a, b, m in zip(logits, parts, mix, strict=True)
            )
        passes = [tuple(t.chunk(2)[i] for t in logits) for i in range(2)] if twice else [logits]
        logits = passes[0]
        if twice:
            embedding = embedding.chunk(2)[0]
        loss = None
        if targets:
            loss = logits[0].new_zeros(())
            for i, name in enumerate(self.task_names):
                if name not in targets or targets[name] is None:
                    continue
                spec = self._task_specs[name]
                task_loss = torch.stack(
                    [self._task_loss(spec, p[i], targets[name], teacher.get(name)) for p in passes]
                ).mean()
                if twice:
                    task_loss = task_loss + self.rdrop * consistency_loss(
                        passes[0][i], passes[1][i], spec.is_multi_label
                    )
                loss = loss + spec.loss_weight * task_loss
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return ScrClfOutput(loss=loss, sentence_embedding=embedding, logits=logits)

    def _task_loss(
        self,
        spec: TaskSpec,
        task_logits: torch.Tensor,
        target: torch.Tensor,
        teacher: torch.Tensor | None,
    ) -> torch.Tensor:
        """One task's loss on the annotated ``target`` (class-weighted, label-smoothed),
        mixed with the loss on a ``teacher``'s probabilities when distilling."""
        weight = getattr(self, f"class_weights_{spec.name}")
        weight = weight if weight.numel() else None
        smoothing = float(self.label_smoothing)
        if spec.is_multi_label:
            soft_target = target.float()
            if smoothing:
                soft_target = soft_target * (1.0 - smoothing) + 0.5 * smoothing
            loss = nn.functional.binary_cross_entropy_with_logits(
                task_logits.float(), soft_target, pos_weight=weight
            )
        else:
            loss = nn.functional.cross_entropy(
                task_logits.float(), target.long(), weight=weight, label_smoothing=smoothing
            )
        if teacher is not None and self.distillation is not None:
            weight_soft, temperature = self.distillation
            loss = (1.0 - weight_soft) * loss + weight_soft * soft_loss(
                task_logits, teacher, spec.is_multi_label, temperature
            )
        return loss


_DROP_KEYS = {
    "_name_or_path",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "id2label",
    "label2id",
    "_attn_implementation_autoset",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
}


def _slim_encoder_config(enc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in enc.items() if k not in _DROP_KEYS}


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModel`` know the ``scrclf`` model type (idempotent)."""
    try:
        AutoConfig.register(ScrClfConfig.model_type, ScrClfConfig)
    except ValueError:
        pass
    try:
        AutoModel.register(ScrClfConfig, ScrClfModel)
    except ValueError:
        pass


# Registration with transformers that waited for this module (scrclf.hooks) runs now.
hooks.mark_model_loaded()
