"""Property-based tests: the data loader and the predictor on arbitrary inputs.

* Any valid records written as JSONL (UTF-8, optionally with a byte-order mark and CRLF or
  CR line endings) or as CSV come back from ``read_records`` + ``validate_records`` unchanged.
* A file with one junk line (text or bytes) raises :class:`DataError` naming that line, and
  never another exception type.
* Any batch of texts (1-2000 characters of arbitrary Unicode) is either refused with a
  ``ValueError`` naming the first bad item, or every item gets valid labels: 1-3 distinct
  themes ordered by score, probabilities in [0, 1] that agree with the decisions, and
  single-label probabilities that sum to 1.
"""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import scrclf
from scrclf.data.records import DataError, has_visible_text, read_records, validate_records
from scrclf.inference.classifier import text_problem
from scrclf.tasks import TaskSet
from tests.helpers import CONFIG_DIR

TASKS = TaskSet.from_config(OmegaConf.load(CONFIG_DIR / "task" / "codebook.yaml").tasks)
COLUMNS = ["id", "review_id", "text", "finding", "themes", "evidence", "action_strength"]
BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# Any Unicode text a person could type or paste: no surrogates (they cannot be written as
# UTF-8), with at least one visible character.
any_char = st.characters(exclude_categories=("Cs",))
visible_text = st.text(any_char, min_size=1, max_size=120).filter(has_visible_text)
record_id = st.one_of(st.integers(min_value=0, max_value=10**9), visible_text)


@st.composite
def records(draw, min_size: int = 1, max_size: int = 12) -> list[dict]:
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "id": record_id,
                    "review_id": record_id,
                    "text": visible_text,
                    "finding": st.none() | visible_text,
                    "themes": st.lists(
                        st.sampled_from(TASKS["themes"].labels), min_size=1, max_size=3, unique=True
                    ),
                    "evidence": st.sampled_from(TASKS["evidence"].labels),
                    "action_strength": st.sampled_from(TASKS["action_strength"].labels),
                }
            ),
            min_size=min_size,
            max_size=max_size,
            unique_by=lambda r: str(r["id"]),
        )
    )
    return rows


def _row(**changes) -> dict:
    """A valid row, for the explicit examples below."""
    row = {
        "id": "R1",
        "review_id": "V1",
        "text": "The board should audit supervision.",
        "finding": None,
        "themes": ["audit_assurance"],
        "evidence": "local_data",
        "action_strength": "weak",
    }
    return {**row, **changes}


# Characters that str.splitlines() treats as line breaks but JSON keeps inside strings.
LINE_LIKE = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"


def _jsonl_bytes(rows: list[dict], newline: str = "\n", bom: bool = False) -> bytes:
    text = "".join(json.dumps(r, ensure_ascii=False) + newline for r in rows)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def _load(path) -> list[dict]:
    recs = read_records(path)
    validate_records(recs, TASKS)
    assert [r.line for r in recs] == sorted(r.line for r in recs)
    return [r.data for r in recs]


# --------------------------------------------------------------------------- data loader


@BOUNDED
@given(rows=records(), newline=st.sampled_from(["\n", "\r\n", "\r"]), bom=st.booleans())
@example(rows=[_row(text=LINE_LIKE, finding=LINE_LIKE)], newline="\n", bom=False)
@example(rows=[_row(), _row(id=2, text="[1, 2]", finding="[]")], newline="\r\n", bom=True)
def test_jsonl_round_trip_gives_back_the_same_rows(tmp_path_factory, rows, newline, bom):
    path = tmp_path_factory.mktemp("jsonl") / "split.jsonl"
    path.write_bytes(_jsonl_bytes(rows, newline, bom))
    assert _load(path) == rows
    assert [r.line for r in read_records(path)] == list(range(1, len(rows) + 1))


def _csv_bytes(rows: list[dict], newline: str) -> bytes:
    buffer = io.StringIO()
    # Python's writer leaves a lone "\r" unquoted under a "\n" terminator, which no reader
    # can tell from a line break; spreadsheets quote it, as QUOTE_ALL does here.
    quoting = csv.QUOTE_ALL if newline == "\n" else csv.QUOTE_MINIMAL
    writer = csv.writer(buffer, lineterminator=newline, quoting=quoting)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                ";".join(row[c]) if c == "themes" else "" if row[c] is None else str(row[c])
                for c in COLUMNS
            ]
        )
    return buffer.getvalue().encode("utf-8")


@BOUNDED
@given(rows=records(), newline=st.sampled_from(["\n", "\r\n"]))
@example(
    rows=[_row(text="[1, 2]", finding='["a finding"]'), _row(id="R2", text=LINE_LIKE)],
    newline="\r\n",
)
def test_csv_round_trip_gives_back_the_same_rows(tmp_path_factory, rows, newline):
    path = tmp_path_factory.mktemp("csv") / "split.csv"
    path.write_bytes(_csv_bytes(rows, newline))
    # Spreadsheet cells are strings: ids come back as text.
    expected = [{**r, "id": str(r["id"]), "review_id": str(r["review_id"])} for r in rows]
    assert _load(path) == expected


def _is_blank(line: bytes) -> bool:
    """Lines the reader skips: nothing but whitespace once decoded."""
    try:
        return not line.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return False


# One physical line: no "\n" or "\r" (both end a line, as in editors).
junk_text = st.text(any_char, min_size=1, max_size=80).filter(
    lambda t: "\n" not in t and "\r" not in t
)
junk_bytes = st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b)


@BOUNDED
@given(
    rows=records(max_size=6),
    data=st.data(),
    junk=st.one_of(junk_text.map(lambda t: t.encode("utf-8")), junk_bytes),
)
def test_a_junk_line_is_a_data_error_naming_that_line(tmp_path_factory, rows, data, junk):
    assume(not _is_blank(junk))
    position = data.draw(st.integers(min_value=0, max_value=len(rows)), label="position")
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]
    lines.insert(position, junk)
    path = tmp_path_factory.mktemp("junk") / "split.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError) as info:
        _load(path)
    assert info.value.line == position + 1
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}:{position + 1}: ")


@BOUNDED
@given(
    rows=records(max_size=6),
    data=st.data(),
    field=st.sampled_from(["text", "themes", "evidence", "id"]),
    value=st.one_of(
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.text(any_char, max_size=20),
    ),
)
def test_a_bad_value_is_a_data_error_naming_line_and_field(
    tmp_path_factory, rows, data, field, value
):
    index = data.draw(st.integers(min_value=0, max_value=len(rows) - 1), label="index")
    bad = {**rows[index], field: value}
    try:  # the value may happen to be valid there: then there is nothing to refuse
        validate_records([_record(bad)], TASKS)
        assume(False)
    except DataError:
        pass
    rows = [*rows[:index], bad, *rows[index + 1 :]]
    path = tmp_path_factory.mktemp("bad") / "split.jsonl"
    path.write_bytes(_jsonl_bytes(rows))
    with pytest.raises(DataError) as info:
        _load(path)
    assert info.value.line == index + 1
    assert info.value.field == field


def _record(row: dict):
    from scrclf.data.records import Record

    return Record(json.loads(json.dumps(row)), "probe", 1)


# ----------------------------------------------------------------------------- predictor


@pytest.fixture(scope="module")
def classifiers(tiny_export):
    return {b: scrclf.load(tiny_export.export_dir, backend=b) for b in ("onnx", "torch")}


def _check_item(clf, item: dict) -> None:
    themes_task = clf.tasks["themes"]
    themes = item["themes"]
    labels, scores = themes["labels"], themes["scores"]
    assert list(scores) == themes_task.labels
    assert all(0.0 <= p <= 1.0 for p in scores.values())
    assert 1 <= len(labels) <= themes_task.max_labels
    assert len(set(labels)) == len(labels) and set(labels) <= set(themes_task.labels)
    assert themes["primary"] == labels[0]
    assert [scores[lab] for lab in labels] == sorted((scores[lab] for lab in labels), reverse=True)
    thresholds = dict(zip(themes_task.labels, themes_task.decision_thresholds(), strict=True))
    margin = {lab: scores[lab] - thresholds[lab] for lab in themes_task.labels}
    top = max(scores, key=scores.get)
    # the top-scoring theme is always the primary; the others must reach their thresholds
    assert labels[0] == top
    above = {lab for lab in themes_task.labels if margin[lab] >= 0} | {top}
    assert set(labels) <= above
    assert len(labels) == min(len(above), themes_task.max_labels)
    dropped = above - set(labels)
    if dropped:
        assert min(margin[lab] for lab in labels if lab != top) >= max(
            margin[lab] for lab in dropped
        )
    for name in ("evidence", "action_strength"):
        entry = item[name]
        probs = entry["scores"]
        assert list(probs) == clf.tasks[name].labels
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert probs[entry["label"]] == max(probs.values())


texts_strategy = st.lists(
    st.text(st.characters(), min_size=1, max_size=2000), min_size=1, max_size=4
)


def _predict_or_refuse(clf, texts: list[str]) -> None:
    problems = [(i, text_problem(t)) for i, t in enumerate(texts) if text_problem(t)]
    if problems:
        index, problem = problems[0]
        with pytest.raises(ValueError, match=re.escape(f"texts[{index}]: {problem}")):
            clf.predict(texts)
        return
    items = clf.predict(texts, batch_size=3)
    assert len(items) == len(texts)
    for item in items:
        _check_item(clf, item)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=texts_strategy)
def test_onnx_predictions_are_valid_for_any_text(classifiers, texts):
    _predict_or_refuse(classifiers["onnx"], texts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=texts_strategy)
def test_torch_predictions_are_valid_for_any_text(classifiers, texts):
    _predict_or_refuse(classifiers["torch"], texts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.text(any_char, min_size=1, max_size=300).filter(has_visible_text), min_size=1, max_size=3
    )
)
def test_backends_agree_on_any_text(classifiers, texts):
    a, b = classifiers["onnx"].logits(texts), classifiers["torch"].logits(texts)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)
