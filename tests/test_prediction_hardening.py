"""``Classifier.predict`` on awkward inputs: each has one defined outcome, on both backends.

Outcomes:

* refused with ``ValueError("texts[i]: ...")`` (or ``findings[i]``) naming the first bad item,
  before anything is computed: empty, whitespace-only or invisible-only texts, None, NaN,
  non-strings, lone surrogates, a findings list of the wrong length;
* accepted and truncated to ``max_seq_length`` tokens with one :class:`TruncationWarning`
  per call: very long texts and findings;
* accepted as they are: any language; control and format characters inside a text
  (``\\x00``, ``\\x1b``, zero-width space, byte-order mark) are dropped by the tokenizer, so
  the result is that of the text without them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import scrclf
from scrclf.inference.classifier import TruncationWarning

BACKENDS = ["torch", "onnx"]
GOOD = "The board should commission training on the new procedure protocol."
OTHER = "All agencies should redesign the referral strategy."

NON_ENGLISH = {
    "welsh": "Dylai'r bwrdd sicrhau bod pob ymarferydd yn cael hyfforddiant ar rannu gwybodaeth.",
    "polish": "Zarząd powinien zapewnić, że wszyscy pracownicy przejdą szkolenie z procedur.",
    "arabic": "يجب على المجلس ضمان حصول جميع الممارسين على تدريب حول تبادل المعلومات.",
    "chinese": "委员会应确保所有从业人员接受有关信息共享的培训。",
    "mixed_with_emoji": "Board 👶 should review ŻÓŁĆ procedures — «urgently» ✔",
}


@pytest.fixture(scope="module")
def classifiers(tiny_export):
    return {b: scrclf.load(tiny_export.export_dir, backend=b) for b in BACKENDS}


def _valid(clf, items) -> None:
    for item in items:
        themes = item["themes"]
        assert 1 <= len(themes["labels"]) <= 3
        assert themes["primary"] == themes["labels"][0]
        for name in ("evidence", "action_strength"):
            scores = item[name]["scores"]
            assert math.isclose(sum(scores.values()), 1.0, abs_tol=1e-9)
            assert item[name]["label"] in clf.tasks[name].labels


# ----------------------------------------------------------------------------- refused

REFUSED = [
    ("empty_string", [GOOD, ""], None, r"texts\[1\]: is empty or whitespace only"),
    (
        "whitespace_only",
        [GOOD, OTHER, " \t\n\u3000"],
        None,
        r"texts\[2\]: is empty or whitespace only",
    ),
    (
        "invisible_only",
        ["\u200b\x00\x1b\ufeff", GOOD],
        None,
        r"texts\[0\]: has no visible characters",
    ),
    ("none_in_batch", [GOOD, OTHER, None], None, r"texts\[2\]: is None"),
    ("int_in_batch", [GOOD, 7], None, r"texts\[1\]: must be a string, got int"),
    ("bytes_in_batch", [GOOD.encode()], None, r"texts\[0\]: must be a string, got bytes"),
    ("nan_in_batch", [GOOD, float("nan")], None, r"texts\[1\]: is NaN \(a missing value\)"),
    (
        "lone_surrogate",
        [GOOD, "bad \ud800 text"],
        None,
        r"texts\[1\]: contains a lone surrogate '\\ud800' at character 4",
    ),
    ("findings_too_short", [GOOD, OTHER, GOOD], ["a finding"], "findings has 1 items for 3 texts"),
    ("findings_too_long", [GOOD], ["a", "b"], "findings has 2 items for 1 texts"),
    ("int_finding", [GOOD, OTHER], [None, 3], r"findings\[1\]: must be a string or None, got int"),
    ("surrogate_finding", [GOOD], ["x\udfff"], r"findings\[0\]: contains a lone surrogate"),
    ("single_string", GOOD, None, "got a single string; pass \\[text\\]"),
    ("findings_single_string", [GOOD], "a finding", "findings must be a list"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("texts", "findings", "match"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_bad_item_is_refused_naming_its_index_before_any_computation(
    classifiers, backend, texts, findings, match, monkeypatch
):
    clf = classifiers[backend]
    calls = []
    monkeypatch.setattr(clf.engine, "run", lambda batch: calls.append(batch))
    with pytest.raises(ValueError, match=match):
        clf.predict(texts, findings)
    with pytest.raises(ValueError, match=match):
        clf.logits(texts, findings)
    assert calls == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_batch_size_is_refused(classifiers, backend):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        classifiers[backend].predict([GOOD], batch_size=0)


# ---------------------------------------------------------------------------- truncated


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_inputs_are_truncated_with_one_warning_per_call(classifiers, backend):
    clf = classifiers[backend]
    long_text = "recommendation " * 4_000  # 60,000 characters
    long_finding = "finding " * 2_000
    for _ in range(2):  # one warning per call, however many calls and items
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = clf.predict(
                [long_text, GOOD, long_text, OTHER],
                [None, long_finding, long_finding, None],
                batch_size=2,
            )
        truncation = [w for w in caught if issubclass(w.category, TruncationWarning)]
        assert len(truncation) == 1
        assert truncation[0].message.count == 3
        assert truncation[0].message.max_length == clf.max_seq_length
        assert "3 of 4 inputs were longer than 256 tokens" in str(truncation[0].message)
        assert len(out) == 4
        _valid(clf, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.predict([GOOD, OTHER])
    assert not [w for w in caught if issubclass(w.category, TruncationWarning)]


def test_truncated_inputs_give_the_same_result_on_both_backends(classifiers):
    texts = ["word " * 3000 + GOOD, GOOD + " training" * 3000]
    with pytest.warns(TruncationWarning):
        a = classifiers["torch"].logits(texts)
    with pytest.warns(TruncationWarning):
        b = classifiers["onnx"].logits(texts)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)


# ----------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("backend", BACKENDS)
def test_texts_in_other_languages_are_classified(classifiers, backend):
    clf = classifiers[backend]
    out = clf.predict(list(NON_ENGLISH.values()))
    assert len(out) == len(NON_ENGLISH)
    _valid(clf, out)


def test_other_languages_give_the_same_result_on_both_backends(classifiers):
    texts = list(NON_ENGLISH.values())
    a, b = (classifiers[name].logits(texts) for name in BACKENDS)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "char",
    ["\x00", "\x1b", "\u200b", "\ufeff", "\x7f", "\u00ad"],
    ids=["nul", "escape", "zero_width_space", "bom", "delete", "soft_hyphen"],
)
def test_control_and_format_characters_inside_a_text_are_dropped(classifiers, backend, char):
    clf = classifiers[backend]
    dirty = f"{char}The board should{char} commission train{char}ing on the protocol.{char}"
    clean = "The board should commission training on the protocol."
    dirty_logits = clf.logits([dirty], [f"stud{char}ies show"])
    clean_logits = clf.logits([clean], ["studies show"])
    for x, y in zip(dirty_logits, clean_logits, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    assert clf.predict([dirty]) == clf.predict([clean])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_missing_findings_are_fine(classifiers, backend):
    clf = classifiers[backend]
    assert clf.predict([]) == []
    assert [x.shape for x in clf.logits([])] == [(0, t.num_labels) for t in clf.tasks]
    with_none = clf.predict([GOOD, OTHER], [None, ""])
    without = clf.predict([GOOD, OTHER])
    assert with_none == without  # an empty finding counts as none
