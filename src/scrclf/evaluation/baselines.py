"""Reference systems that the trained model must beat: a label prior, keyword rules, TF-IDF.

Every baseline is fitted on the train split only and returns, per task, scores in the same
form as the model's outputs: logits. Decisions are then made by the one decision rule of
:mod:`scrclf.calibration` with temperature 1 and thresholds 0.5 (:func:`plain_decisions`),
so a baseline and the model are scored by exactly the same code.

``prior``
    Predicts the training label frequencies for every item: the most frequent label of each
    single-label task and the most frequent theme. The floor any system must clear.

``keywords``
    Hand-written cue phrases per label, taken from the codebook (the tables below). This is
    a transparent rule baseline, not a model: it shows how far surface wording alone gets
    and where the codebook's distinctions need more than a word list.

``tfidf_logreg``
    TF-IDF over word unigrams and bigrams (sublinear term frequency) of text + finding, and
    a logistic regression per task with balanced class weights: one binary regression per
    theme, one multinomial regression for each single-label task.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from scrclf.errors import DataError, SettingsError
from scrclf.tasks import TaskSet, TaskSpec

PROB_FLOOR = 1e-6

# ------------------------------------------------------------------------ cue tables
#
# How a cue matches: case-insensitively at the start of a word, so the stem "supervis"
# covers supervision, supervisor and supervising. A cue written in capitals only (an
# acronym such as NICE or MASH) must appear as that whole word in capitals, so "NICE" does
# not fire on "nice".
#
# themes: every label whose cues appear is predicted (the labels with most cues first, at
# most three). With no cue at all, the most frequent theme of the training data is taken.

THEME_CUES: dict[str, tuple[str, ...]] = {
    "procedures_policy": (
        "procedure",
        "policy",
        "policies",
        "protocol",
        "pathway",
        "threshold document",
        "checklist",
        "proforma",
        "pro forma",
        "template",
        "written guidance",
        "comply",
        "compliance",
    ),
    "training_learning": (
        "training",
        "train ",
        "trained",
        "briefing",
        "awareness",
        "learning",
        "lessons",
        "disseminat",
        "competenc",
        "workshop",
        "e-learning",
        "skills",
    ),
    "supervision_support": (
        "supervis",
        "reflective",
        "reflection",
        "case consultation",
        "management oversight",
        "manager oversight",
        "staff support",
        "wellbeing",
        "well-being",
        "professional judgement",
        "culture of challenge",
        "emotional impact",
    ),
    "assessment_risk": (
        "assess",
        "risk",
        "curiosity",
        "history",
        "analys",
        "planning",
        "decision-making",
        "decision making",
        "threshold",
    ),
    "information_sharing": (
        "information sharing",
        "share information",
        "sharing of information",
        "shared with",
        "referral",
        "refer ",
        "strategy meeting",
        "strategy discussion",
        "conference",
        "joint working",
        "escalat",
        "professional disagreement",
        "communicat",
        "multi-agency",
        "multiagency",
        "MASH",
        "feedback",
    ),
    "records_systems": (
        "record",
        "chronolog",
        "flag",
        "alert",
        "IT system",
        "electronic",
        "database",
        "case management system",
        "documentation",
    ),
    "audit_assurance": (
        "audit",
        "monitor",
        "assurance",
        "assure",
        "performance data",
        "quality assur",
        "action plan",
        "evaluat",
        "impact",
        "report to the board",
        "report back",
    ),
    "workforce_resources": (
        "caseload",
        "staffing",
        "recruit",
        "retention",
        "retain",
        "capacity",
        "commission",
        "funding",
        "resourc",
        "vacanc",
        "specialist post",
        "skill mix",
        "workforce",
    ),
    "child_family_engagement": (
        "voice of the child",
        "child's voice",
        "lived experience",
        "wishes and feelings",
        "seen alone",
        "seen and heard",
        "father",
        "male partner",
        "male carer",
        "parents",
        "carers",
        "interpreter",
        "cultur",
        "disguised compliance",
        "engag",
    ),
    "national_structural": (
        "Department for Education",
        "DfE",
        "Department of Health",
        "Home Office",
        "government",
        "national",
        "legislation",
        "Secretary of State",
        "minister",
        "regulator",
        "Ofsted",
        "poverty",
        "deprivation",
        "welfare",
        "housing benefit",
    ),
    "other": (
        "disciplinary",
        "publish",
        "publication",
        "this child's plan",
        "the family's current",
    ),
}

# evidence: the first label in this order whose cues appear (the codebook's rule: the first
# basis that applies). A finding paragraph with none of the earlier cues counts as
# single_case: the finding states what happened in this case. Nothing at all: none_stated.
EVIDENCE_CUES: dict[str, tuple[str, ...]] = {
    "research": (
        "research",
        "studies",
        "study",
        "evidence base",
        "literature",
        "systematic review",
        "biennial",
        "triennial",
        "analysis of serious case reviews",
        "national analysis",
        "analyses of serious case reviews",
    ),
    "guidance": (
        "Working Together",
        "NICE",
        "statutory",
        "guidance",
        "Royal College",
        "standards",
        "framework",
        "Children Act",
        "code of practice",
        "intercollegiate",
    ),
    "local_data": (
        "audit",
        "inspection",
        "performance data",
        "survey",
        "local reviews",
        "previous reviews",
        "several reviews",
        "other reviews",
        "local data",
        "data show",
    ),
    "single_case": (
        "in this case",
        "this review",
        "this family",
        "in this instance",
        "the review found",
        "the panel found",
    ),
}
EVIDENCE_FALLBACK = "none_stated"
FINDING_MEANS = "single_case"

# action_strength: strong cues first, then intermediate; otherwise weak (reminders,
# procedures, training and awareness are weak actions in the codebook).
STRENGTH_CUES: dict[str, tuple[str, ...]] = {
    "strong": (
        "redesign",
        "automatic",
        "mandatory field",
        "cannot be closed",
        "cannot proceed",
        "not possible to",
        "will not allow",
        "prevent",
        "forcing",
        "hard stop",
        "co-locat",
        "single point of contact",
        "joint team",
        "integrated",
        "standardised",
        "standardized",
        "remove the hand",
    ),
    "intermediate": (
        "checklist",
        "tool",
        "template",
        "proforma",
        "caseload",
        "additional staff",
        "supervision",
        "documentation",
        "software",
        "system",
        "structured",
        "communication route",
        "dedicated",
    ),
}
STRENGTH_FALLBACK = "weak"


def _cue_pattern(cue: str) -> re.Pattern[str]:
    if cue.isupper():
        return re.compile(rf"\b{re.escape(cue)}\b")
    return re.compile(rf"(?<![a-z]){re.escape(cue.lower())}", re.IGNORECASE)


class CueTable:
    """Cue phrases per label (in priority order), compiled once."""

    def __init__(self, cues: Mapping[str, Sequence[str]]):
        self.cues = {label: tuple(c) for label, c in cues.items()}
        self._compiled = {
            label: [_cue_pattern(c) for c in phrases] for label, phrases in self.cues.items()
        }

    def hits(self, text: str) -> dict[str, int]:
        """How many distinct cues of each label occur in ``text``."""
        return {
            label: sum(1 for p in patterns if p.search(text))
            for label, patterns in self._compiled.items()
        }


def cue_table_markdown() -> str:
    """The cue tables as Markdown (for documentation and reports)."""
    lines = []
    for title, table in (
        ("themes", THEME_CUES),
        ("evidence (first match wins)", EVIDENCE_CUES),
        ("action_strength (first match wins)", STRENGTH_CUES),
    ):
        lines += [f"**{title}**", "", "| label | cue phrases |", "|---|---|"]
        lines += [
            f"| `{label}` | {', '.join(f'`{c}`' for c in cues)} |" for label, cues in table.items()
        ]
        lines.append("")
    lines.append(
        f"With no evidence cue: `{FINDING_MEANS}` when a finding is given, else "
        f"`{EVIDENCE_FALLBACK}`. With no strength cue: `{STRENGTH_FALLBACK}`."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------- helpers


def plain_decisions(tasks: TaskSet) -> TaskSet:
    """The same tasks with temperature 1, default thresholds (0.5) and no class offsets: the
    untuned rule."""
    return TaskSet.from_config(
        [{**t.to_dict(), "temperature": 1.0, "thresholds": None, "offsets": None} for t in tasks]
    )


def as_logits(task: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """Logits whose probabilities (at temperature 1) are ``probs``."""
    p = np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, 1 - PROB_FLOOR)
    if task.is_multi_label:
        return np.log(p) - np.log1p(-p)
    return np.log(p)


def input_text(
    row: Mapping[str, Any], text_column: str = "text", pair_column: str | None = "finding"
) -> str:
    """Text and finding joined: what the baselines read."""
    text = str(row.get(text_column) or "")
    finding = row.get(pair_column) if pair_column else None
    return f"{text} {finding}" if finding else text


def label_frequencies(task: TaskSpec, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Share of training items carrying each label (per item; themes in any position)."""
    counts: Counter[str] = Counter()
    for row in rows:
        value = row[cast(str, task.column)]  # TaskSpec.__post_init__ always sets it
        counts.update(value if task.is_multi_label else [value])
    n = max(len(rows), 1)
    return np.asarray([counts.get(label, 0) / n for label in task.labels], dtype=np.float64)


class Baseline:
    """Common interface: ``fit(train_rows)``, then ``logits(rows)`` per task name."""

    name = "baseline"
    description = ""

    def __init__(
        self, tasks: TaskSet, text_column: str = "text", pair_column: str | None = "finding"
    ):
        self.tasks = plain_decisions(tasks)
        self.text_column = text_column
        self.pair_column = pair_column

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> Baseline:
        raise NotImplementedError

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def logits(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        probs = self.probabilities(rows)
        return {name: as_logits(self.tasks[name], p) for name, p in probs.items()}

    def _texts(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return [input_text(r, self.text_column, self.pair_column) for r in rows]


# --------------------------------------------------------------------------- prior


class PriorBaseline(Baseline):
    name = "prior"
    description = "training label frequencies for every item (majority label / top theme)"

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> PriorBaseline:
        self.freq = {}
        for task in self.tasks:
            freq = label_frequencies(task, rows)
            if not task.is_multi_label:
                freq = freq / max(freq.sum(), PROB_FLOOR)
            self.freq[task.name] = freq
        return self

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return {name: np.tile(freq, (len(rows), 1)) for name, freq in self.freq.items()}


# ------------------------------------------------------------------------ keywords


class KeywordBaseline(Baseline):
    """The cue tables as scores.

    Themes: a label whose cues fire gets ``0.5 + 0.4 * hits / (hits + 1)`` (0.7 for one cue,
    rising towards 0.9), so it passes the 0.5 threshold; labels without cues stay below 0.5
    in the order of their training frequency, so with no cue at all the decision rule takes
    the most frequent theme. Evidence and strength: the chosen label gets 0.6 plus a share
    of 0.4 spread by training frequency.
    """

    name = "keywords"
    description = "cue phrases per label from the codebook (rules, not a model)"

    def __init__(
        self, tasks: TaskSet, text_column: str = "text", pair_column: str | None = "finding"
    ):
        super().__init__(tasks, text_column, pair_column)
        self.tables = {
            "themes": CueTable(THEME_CUES),
            "evidence": CueTable(EVIDENCE_CUES),
            "action_strength": CueTable(STRENGTH_CUES),
        }
        for task in self.tasks:
            table = self.tables.get(task.name)
            if table is None:
                continue
            unknown = set(table.cues) - set(task.labels)
            if unknown:
                raise SettingsError(
                    f"keyword cues name labels {sorted(unknown)} that task "
                    f"'{task.name}' does not have"
                )

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> KeywordBaseline:
        # Frequencies only order the fallback (no cue found) and the labels without cues.
        self.freq = {t.name: label_frequencies(t, rows) for t in self.tasks}
        return self

    def _multi(self, task: TaskSpec, table: CueTable, texts: list[str]) -> np.ndarray:
        freq = self.freq[task.name]
        base = 0.45 * freq / max(freq.max(), PROB_FLOOR)
        out = np.tile(base, (len(texts), 1))
        index = task.label2id()
        for i, text in enumerate(texts):
            for label, h in table.hits(text).items():
                if h:
                    out[i, index[label]] = 0.5 + 0.4 * h / (h + 1) + 0.001 * freq[index[label]]
        return out

    def _ordered(
        self, task: TaskSpec, table: CueTable, rows: Sequence[Mapping[str, Any]], texts: list[str]
    ) -> np.ndarray:
        freq = self.freq[task.name]
        rest = freq / max(freq.sum(), PROB_FLOOR)
        index = task.label2id()
        out = np.empty((len(texts), task.num_labels))
        for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
            hits = table.hits(text)
            chosen = next((label for label in table.cues if hits[label]), None)
            if chosen is None:
                if task.name == "evidence":
                    has_finding = bool(self.pair_column and row.get(self.pair_column))
                    chosen = FINDING_MEANS if has_finding else EVIDENCE_FALLBACK
                else:
                    chosen = STRENGTH_FALLBACK
            p = 0.4 * rest
            p[index[chosen]] += 0.6
            out[i] = p
        return out

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        texts = self._texts(rows)
        out = {}
        for task in self.tasks:
            table = self.tables.get(task.name)
            if table is None:  # a task the codebook tables do not cover: predict the prior
                freq = self.freq[task.name]
                out[task.name] = np.tile(freq / max(freq.sum(), PROB_FLOOR), (len(rows), 1))
            elif task.is_multi_label:
                out[task.name] = self._multi(task, table, texts)
            else:
                out[task.name] = self._ordered(task, table, rows, texts)
        return out


# -------------------------------------------------------------------------- TF-IDF


class TfidfLogRegBaseline(Baseline):
    name = "tfidf_logreg"
    description = (
        "TF-IDF word 1-2 grams (sublinear tf) of text + finding; logistic "
        "regression per task, one-vs-rest for themes, balanced class weights"
    )

    def __init__(
        self,
        tasks: TaskSet,
        text_column: str = "text",
        pair_column: str | None = "finding",
        C: float = 4.0,
        min_df: int = 1,
        max_features: int | None = 100_000,
        seed: int = 0,
    ):
        super().__init__(tasks, text_column, pair_column)
        self.C = float(C)
        self.min_df = int(min_df)
        self.max_features = max_features
        self.seed = int(seed)

    def _regression(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=self.C, class_weight="balanced", max_iter=2000, random_state=self.seed
        )

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> TfidfLogRegBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not rows:
            raise DataError("tfidf_logreg needs training rows")
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=self.min_df,
            max_features=self.max_features,
            strip_accents="unicode",
            lowercase=True,
        )
        x = self.vectorizer.fit_transform(self._texts(rows))
        self.models: dict[str, Any] = {}
        for task in self.tasks:
            if task.is_multi_label:
                per_label = []
                for label in task.labels:
                    y = np.asarray([label in r[task.column] for r in rows], dtype=np.int64)
                    if y.min() == y.max():  # never (or always) seen: a constant
                        per_label.append(float(y[0]))
                    else:
                        per_label.append(self._regression().fit(x, y))
                self.models[task.name] = per_label
            else:
                y = np.asarray([task.label2id()[r[task.column]] for r in rows])
                if len(np.unique(y)) < 2:
                    self.models[task.name] = int(y[0])
                else:
                    self.models[task.name] = self._regression().fit(x, y)
        return self

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        x = self.vectorizer.transform(self._texts(rows))
        n = x.shape[0]
        out = {}
        for task in self.tasks:
            model = self.models[task.name]
            probs = np.zeros((n, task.num_labels))
            if task.is_multi_label:
                for j, m in enumerate(model):
                    probs[:, j] = m if isinstance(m, float) else m.predict_proba(x)[:, 1]
            elif isinstance(model, int):
                probs[:, model] = 1.0
            else:
                probs[:, model.classes_] = model.predict_proba(x)
            out[task.name] = probs
        return out


BASELINES: dict[str, type[Baseline]] = {
    PriorBaseline.name: PriorBaseline,
    KeywordBaseline.name: KeywordBaseline,
    TfidfLogRegBaseline.name: TfidfLogRegBaseline,
}


def build_baseline(
    name: str,
    tasks: TaskSet,
    options: Mapping[str, Any] | None = None,
    text_column: str = "text",
    pair_column: str | None = "finding",
) -> Baseline:
    """A baseline by name, with optional keyword arguments (e.g. ``C`` for tfidf_logreg)."""
    if name not in BASELINES:
        raise SettingsError(f"unknown baseline '{name}'; known: {sorted(BASELINES)}")
    return BASELINES[name](
        tasks, text_column=text_column, pair_column=pair_column, **dict(options or {})
    )
