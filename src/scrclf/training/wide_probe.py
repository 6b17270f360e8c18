"""The wide part's settings probed beside trained encoders, without training again.

In logreg mode the encoder learns alone: the wide part is fitted on the training split
before training, held fixed, and weighed beside the encoder on validation after it
(:mod:`scrclf.modeling.wide`). A finished run's encoder logits can therefore be paired with a
wide part fitted under other settings (its n-gram order, inverse regularisation ``C``,
which tasks read the recommendation text alone, and whether its logits add the logistic
regressions' intercepts)
and scored by the study's rule (:mod:`scrclf.training.selection`: the wide weights and every
decision refitted on validation, test reported beside the baseline on the same review
resamples). Each row says what that run would have scored had it been trained with that
setting: the same encoder, another wide part.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scrclf.errors import SettingsError
from scrclf.evaluation.evaluate import load_classifier, resolve_model
from scrclf.tasks import HEADLINE
from scrclf.training.selection import (
    LOGITS_CACHE,
    SPLITS,
    RunOutputs,
    Study,
    StudyInputs,
    _score_cells,
    _scored,
    run_outputs,
    study_inputs,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WideSetting:
    """One wide part to fit: its n-gram order (1 or 2), inverse regularisation, the tasks
    whose wide logits read the recommendation text alone (``model.wide.text_only``), and
    whether its logits add the intercepts (``model.wide.intercept``)."""

    ngrams: int
    C: float
    text_only: tuple[str, ...] = ()
    intercept: bool = False

    def __post_init__(self) -> None:
        if self.ngrams not in (1, 2):
            raise SettingsError(f"wide n-gram order must be 1 or 2, got {self.ngrams!r}")
        if not self.C > 0:
            raise SettingsError(f"wide C must be a positive number, got {self.C!r}")

    @property
    def name(self) -> str:
        text = f", text alone: {' + '.join(self.text_only)}" if self.text_only else ""
        intercept = ", intercepts" if self.intercept else ""
        return f"ngrams {self.ngrams}, C {self.C:g}{text}{intercept}"


def _ids_digest(ids: Mapping[str, Sequence[Sequence[int]]], buckets: int) -> str:
    """Runs whose token ids and bucket count agree get the same fitted wide part."""
    h = hashlib.sha256(str(buckets).encode())
    for split in sorted(ids):
        for seq in ids[split]:
            h.update(np.asarray(seq, dtype=np.int64).tobytes())
            h.update(b"|")
    return h.hexdigest()


def _wide_logits(
    model,
    ids: Mapping[str, Sequence[Sequence[int]]],
    inputs: StudyInputs,
    setting: WideSetting,
    sep_token_id: int | None,
) -> dict[str, list[np.ndarray]]:
    """Fit a wide part with ``setting`` on a copy of the model's and return its logits per
    scored split, per task in order."""
    from scrclf.modeling.model import check_wide
    from scrclf.modeling.wide import fit_wide, wide_logits_of

    probe = copy.deepcopy(model)
    probe.config.wide = check_wide(
        {
            **probe.config.wide,
            "ngrams": setting.ngrams,
            "C": setting.C,
            "mix": {name: 0.0 for name in probe.task_names},
            "text_only": list(setting.text_only),
            "sep_token_id": sep_token_id,
            "intercept": setting.intercept,
        },
        probe.task_names,
    )
    fit_wide(probe, ids["train"], inputs.data["train"].targets(inputs.tasks), inputs.tasks)
    by_name = {
        split: dict(zip(probe.task_names, wide_logits_of(probe, ids[split]), strict=True))
        for split in SPLITS
    }
    return {split: [by_name[split][t.name] for t in inputs.tasks] for split in SPLITS}


def _score(inputs: StudyInputs, outputs: RunOutputs) -> dict[str, Any]:
    """A run's scores by the study's rule, on the study's data, resamples and baseline."""
    return _scored(inputs.tasks, outputs, inputs.data, inputs.boots, inputs.baseline_scores)


def _row(run: Path, setting: str, trained: bool, scored: Mapping[str, Any]) -> dict[str, Any]:
    return {"run": run.name, "setting": setting, "as_trained": trained, **scored}


def probe_wide(
    runs: Sequence[str | Path],
    settings: Sequence[WideSetting],
    study: Study,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score each finished run with its own wide part and with one fitted under each
    setting; the data, resamples and baseline are the study's."""
    inputs = study_inputs(study, data_dir)
    fitted: dict[tuple[str, WideSetting], dict[str, list[np.ndarray]]] = {}
    rows = []
    for run in map(Path, runs):
        classifier = load_classifier(resolve_model(run), backend="torch")
        model = getattr(classifier.engine, "model", None)
        wide = getattr(getattr(model, "config", None), "wide", None)
        if not wide or wide.get("mode") != "logreg":
            raise SettingsError(
                f"{run}: the model has no wide part fitted in logreg mode to probe "
                f"(model.wide: {wide!r})"
            )
        outputs = run_outputs(
            classifier, inputs.tasks, inputs.data, SPLITS, cache=run / LOGITS_CACHE
        )
        own = WideSetting(
            int(wide["ngrams"]),
            float(wide["C"]),
            tuple(wide.get("text_only") or ()),
            bool(wide.get("intercept")),
        )
        sep_token_id = classifier.tokenizer.sep_token_id
        rows.append(_row(run, own.name, True, _score(inputs, outputs)))
        ids = {}
        for split in ("train", *SPLITS):
            split_data = inputs.data[split]
            pairs = split_data.findings if classifier.text_pair else None
            encoded, _ = classifier.encode(split_data.texts, pairs)
            ids[split] = [list(seq) for seq in encoded["input_ids"]]
        digest = _ids_digest(ids, int(wide["buckets"]))
        for setting in settings:
            key = (digest, setting)
            if key not in fitted:
                logger.info("%s: fitting the wide part with %s", run.name, setting.name)
                fitted[key] = _wide_logits(model, ids, inputs, setting, sep_token_id)
            scored = _score(inputs, RunOutputs(outputs.deep, fitted[key]))
            rows.append(_row(run, setting.name, False, scored))
            logger.info(
                "%s, %s: validation %s %.3f, test %.3f",
                run.name,
                setting.name,
                HEADLINE,
                scored["validation"][HEADLINE],
                scored["test"][HEADLINE],
            )
    return {
        "study": study.name,
        "baseline": study.baseline,
        "bootstrap": inputs.header["bootstrap"],
        "data": inputs.header["data"],
        "settings": [
            {"ngrams": s.ngrams, "C": s.C, "text_only": list(s.text_only), "intercept": s.intercept}
            for s in settings
        ],
        "rows": rows,
    }


def format_probe(result: Mapping[str, Any]) -> str:
    """The probe as Markdown: per run, its own wide part and each probed setting."""
    lines = [
        "# The wide part's settings beside trained encoders",
        "",
        "Each run's encoder logits with a wide part fitted under each setting, the wide "
        "weights and decisions refitted on validation (the study's rule). Test figures with "
        f"95% review-bootstrap intervals ({result['bootstrap']['resamples']} resamples); gaps "
        f"are paired differences to `{result['baseline']}`.",
        "",
        "| run | wide part | wide weights (themes / evidence / action_strength) | "
        "val themes micro-F1 | val mean macro-F1 | test mean macro-F1 | themes micro-F1 | "
        "themes micro gap | themes macro-F1 | evidence macro-F1 | action_strength macro-F1 | "
        "themes/item (annotated) | max theme share gap |",
        "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        mix = row.get("wide_mix") or {}
        weights = " / ".join(
            f"{mix[t]:g}" for t in ("themes", "evidence", "action_strength") if t in mix
        )
        themes = row["validation"]["tasks"].get("themes")
        cells = [
            row["run"],
            row["setting"] + (" (as trained)" if row["as_trained"] else ""),
            weights,
            f"{themes['micro_f1']:.3f}" if themes else "",
            *_score_cells(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
