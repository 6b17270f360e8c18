"""``scrclf review``: readers, finder, bad input, outputs and the HTML report."""

from __future__ import annotations

import csv
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("pypdf")
pytest.importorskip("docx")
pytest.importorskip("bs4")

from scrclf.cli import main  # noqa: E402
from scrclf.reviews import find_recommendations, read_document  # noqa: E402
from scrclf.reviews.blocks import Dehyphenator, normalise_space  # noqa: E402
from scrclf.reviews.finder import addressee_of, similarity  # noqa: E402
from scrclf.reviews.readers import DocumentError  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "reviews"
GOLD = {p: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.gold.json"))}
DEV = [g for g in GOLD.values() if not g["held_out"]]
# Development-only pasted-text variants (see the fixtures' README); none is held out.
VARIANTS = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("variants/*.gold.json"))]


def test_fixture_set_has_the_promised_shape():
    formats = [g["format"] for g in GOLD.values()]
    assert len(formats) >= 30
    assert formats.count("pdf") >= 12 and formats.count("docx") >= 8
    assert formats.count("html") >= 5 and formats.count("txt") >= 5
    held = [g for g in GOLD.values() if g["held_out"]]
    assert len(held) == len(GOLD) // 3
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 5_000_000


@pytest.mark.parametrize("gold", DEV, ids=[g["document"] for g in DEV])
def test_development_documents_are_read_exactly(gold):
    found = find_recommendations(read_document(FIXTURES / gold["document"]).blocks)
    assert len(found) == len(gold["recommendations"])
    for rec, want in zip(found, gold["recommendations"], strict=True):
        assert similarity(rec.text, want["text"]) >= 0.9
        if want["finding"] is None:
            assert rec.finding is None
        else:
            assert similarity(rec.finding or "", want["finding"]) >= 0.9
        if want["page"] is not None:
            assert rec.page == want["page"]


def test_text_variants_are_development_documents():
    assert len(VARIANTS) >= 20 and all(not g["held_out"] for g in VARIANTS)
    assert {g["format"] for g in VARIANTS} == {"txt"}
    features = [g["features"] for g in VARIANTS]
    for key in ("spacing", "page_numbers", "item_marker", "headings"):
        assert len({f[key] for f in features}) >= 3, key
    assert any(f["marker_alone"] for f in features) and any(f["crlf"] for f in features)


@pytest.mark.parametrize("gold", VARIANTS, ids=[g["document"] for g in VARIANTS])
def test_text_variants_are_read_exactly(gold):
    found = find_recommendations(read_document(FIXTURES / gold["document"]).blocks)
    assert len(found) == len(gold["recommendations"])
    for rec, want in zip(found, gold["recommendations"], strict=True):
        assert similarity(rec.text, want["text"]) >= 0.9
        assert rec.page == want["page"]
        if want["finding"] is None:
            assert rec.finding is None
        else:
            assert similarity(rec.finding or "", want["finding"]) >= 0.9


def _texts(tmp_path, text: str) -> list[str]:
    path = tmp_path / "pasted.txt"
    path.write_text(text, encoding="utf-8")
    return [r.text for r in find_recommendations(read_document(path).blocks)]


def test_pasted_text_without_blank_lines_or_with_one_after_every_line(tmp_path):
    lines = [
        "Serious Case Review: Child A",
        "1. Introduction",
        "The review looked at how the agencies worked together with the family over",
        "the two years before the death of the child.",
        "2. Recommendations",
        "R1 The board should review its neglect strategy and report on progress",
        "to the partnership within six months.",
        "R2 Schools should refer concerns about neglect in the same way as any",
        "other concern.",
        "3. Conclusion",
        "The board will publish its response to the recommendations.",
    ]
    want = [
        "The board should review its neglect strategy and report on progress to the "
        "partnership within six months.",
        "Schools should refer concerns about neglect in the same way as any other concern.",
    ]
    assert _texts(tmp_path, "\n".join(lines)) == want
    assert _texts(tmp_path, "\n\n".join(lines)) == want


def test_page_furniture_of_pasted_text(tmp_path):
    page = [
        "Recommendation 1",
        "The local authority should ensure that every child on the child protection",
        "register has an allocated qualified social worker, and should report to the",
        "Harwick LSCB | Serious Case Review Child A",  # a header met once, mid-sentence
        "Board each quarter on any child without one.",
        "Recommendation 2",
        "Health visitors should record the outcome of every contact by",
        "2012",  # a year alone on a line, not a page number
        "at the latest.",
    ]
    text = "\n".join(
        ["1", "Serious Case Review: Child A", "Recommendations", *page[:3], "", "2", *page[3:]]
    )
    assert _texts(tmp_path, text) == [
        "The local authority should ensure that every child on the child protection register "
        "has an allocated qualified social worker, and should report to the Board each "
        "quarter on any child without one.",
        "Health visitors should record the outcome of every contact by 2012 at the latest.",
    ]


def test_numbers_inside_an_item_are_not_items(tmp_path):
    text = "\n".join(
        [
            "Recommendations",
            "(a) The school should tell the social worker about every absence. (Finding",
            "4)",
            "(b) The caseworker should: (a) meet the child in person every half-term;",
            "(b) chair every meeting about the child's education; and (c) stay with",
            "the case after a referral. The police should talk to the school about",
            "K. Smith, the pupil's older brother.",
        ]
    )
    found = _texts(tmp_path, text)
    assert len(found) == 2
    assert found[0].endswith("(Finding 4)")
    assert "(b) chair every meeting" in found[1] and found[1].endswith("older brother.")


def test_cleaning_of_pasted_text():
    assert normalise_space("con\ufb01rmed  the \ufb02ag") == "confirmed the flag"
    d = Dehyphenator("multi-agency working and safeguarding")
    assert d.join("the multi-", "agency meeting") == "the multi-agency meeting"
    assert d.join("safe-", "guarding partners") == "safeguarding partners"
    assert addressee_of("Children's social care should ensure") == "children_social_care"
    assert addressee_of("The LSCB should seek assurance from health") == "board"


def test_word_automatic_numbering_is_read():
    gold = next(g for g in GOLD.values() if g["features"].get("auto_numbering"))
    found = find_recommendations(read_document(FIXTURES / gold["document"]).blocks)
    assert [r.number for r in found][:3] == [g["number"] for g in gold["recommendations"]][:3]


def test_appendix_tables_do_not_count_twice():
    docs = [
        g
        for g in DEV
        if g["features"]["style"] != "table"
        and "Appendix" in json.dumps(g)
        or g["document"] == "review_02.pdf"
    ]
    for gold in docs:
        found = find_recommendations(read_document(FIXTURES / gold["document"]).blocks)
        assert len(found) == len(gold["recommendations"])


@pytest.mark.parametrize(
    "name,message",
    [
        ("scanned.pdf", "needs OCR"),
        ("encrypted.pdf", "encrypted"),
        ("corrupt.pdf", "damaged"),
        ("corrupt.docx", "damaged"),
    ],
)
def test_bad_files_are_named_with_a_reason(name, message):
    with pytest.raises(DocumentError) as err:
        read_document(FIXTURES / "bad" / name)
    assert name in str(err.value) and message in str(err.value)


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables = 0
        self.h2 = []
        self._in_h2 = False
        self.external = []

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        self._in_h2 = tag == "h2"
        for k, v in attrs:
            if k in ("src", "href") and v and "://" in v:
                self.external.append(v)

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def test_review_command_writes_every_output(tiny_export, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in [
        "review_01.pdf",
        "review_16.docx",
        "review_25.html",
        "review_31.txt",
        "review_04.pdf",
        "review_17.docx",
    ]:
        shutil.copy(FIXTURES / name, docs / name)
    for name in ["scanned.pdf", "encrypted.pdf", "corrupt.pdf", "no_recommendations.txt"]:
        shutil.copy(FIXTURES / "bad" / name, docs / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("not written by scrclf")
    code = main(
        [
            "review",
            str(docs),
            "--model",
            str(tiny_export.export_dir),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "scanned.pdf: skipped" in err and "needs OCR" in err
    assert "encrypted.pdf: skipped" in err and "corrupt.pdf: skipped" in err
    assert "no_recommendations.txt: no recommendations found" in err
    assert (out / "mine.txt").read_text() == "not written by scrclf"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    want = sum(
        len(GOLD[FIXTURES / f"{Path(n).stem}.gold.json"]["recommendations"])
        for n in os.listdir(docs)
        if (FIXTURES / f"{Path(n).stem}.gold.json").exists()
    )
    assert len(items) == want
    assert {
        "themes",
        "evidence",
        "action_strength",
        "scores_themes",
        "drivers",
        "finding",
        "addressee",
        "page",
        "number",
        "check",
    } <= set(items[0])
    profile = json.loads((out / "profile.json").read_text())
    assert profile["table1"]["recommendations"] == want
    assert len(profile["skipped"]) == 3
    assert profile["without_recommendations"] == ["no_recommendations"]
    assert profile["table2"][0]["share_of_reviews_ci"] is not None  # 6 reviews: intervals
    with open(out / "items.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == want
    html = (out / "report.html").read_text()
    parser = _Tables()
    parser.feed(html)
    assert parser.tables >= 8 and not parser.external
    for title in [
        "Table 1: recommendations per review",
        "Table 2: themes",
        "Action strength",
        "Evidence basis",
        "Recommendations by addressee",
    ]:
        assert title in parser.h2
    assert "<svg" in html and "<mark" in html
    assert "Hibbert" in (out / "report.md").read_text()


def test_corrections_file_reads_back_as_annotated_data(tiny_export, tmp_path):
    from scrclf.data.records import read_records, validate_records
    from scrclf.inference.classifier import read_tasks

    out = tmp_path / "out"
    assert (
        main(
            [
                "review",
                str(FIXTURES / "review_01.pdf"),
                "--model",
                str(tiny_export.export_dir),
                "--out",
                str(out),
                "--no-explain",
            ]
        )
        == 0
    )
    _, tasks = read_tasks(tiny_export.export_dir)
    records = read_records(out / "corrections.csv")
    validate_records(records, tasks)
    assert len(records) == len(GOLD[FIXTURES / "review_01.gold.json"]["recommendations"])


def test_missing_path_and_unwritable_output_exit_2(tiny_export, tmp_path, capsys):
    code = main(
        [
            "review",
            str(tmp_path / "nope.pdf"),
            "--model",
            str(tiny_export.export_dir),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "nope.pdf" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(
        [
            "review",
            str(FIXTURES / "review_01.pdf"),
            "--model",
            str(tiny_export.export_dir),
            "--out",
            str(blocker),
            "--no-explain",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a folder" in err
