"""Find the recommendations of a review, the finding each follows or cites, and its addressee.

Reviews set out recommendations in many ways: a "Recommendations" section numbered 1., 1.1,
"Recommendation 4:" or "R4"; recommendations grouped under agency headings ("Single agency
recommendations"); tables of number, agency, recommendation and timescale; findings each
followed by its recommendations; CSPR-style findings followed by questions for the
partnership; and summary tables in appendices that repeat what the text said. The finder
walks the blocks of :mod:`.blocks` once, tracking the section it is in, the latest finding
and the agency heading, and splits items by their numbering: the first marker style in a
section is the item level, other styles below it (``(a)``, ``i.``, bullets, deeper Word list
levels) are sub-points of their parent item. Repeats (an appendix table of the same
recommendations) are merged, not counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher

from .blocks import HEADING, ITEM, MODAL, PARA, ROW, Block, split_marker

# Texts at least this similar (difflib ratio over normalised text) are one recommendation.
SAME_ITEM = 0.9

REC_HEADING = re.compile(r"recommendation|^actions?\b|action plan", re.IGNORECASE)
NOT_REC_HEADING = re.compile(
    r"previous|earlier|progress on|implementation of|update on", re.IGNORECASE
)
FINDING_HEADING = re.compile(
    r"finding|key learning|lessons? learn|learning points?|what we learn|analysis|"
    r"key (?:issues|themes)",
    re.IGNORECASE,
)
QUESTIONS = re.compile(
    r"^(?:questions?|issues?|matters?)\s+(?:for|to)\b.{0,60}"
    r"(?:board|partnership|partners|consider)",
    re.IGNORECASE,
)
FINDING_START = re.compile(
    r"^(?:finding|key learning|learning point|lesson)\s*(?:no\.?\s*)?(\d+)\s*[:.\-–)]?\s*",
    re.IGNORECASE,
)
CITATION = re.compile(
    r"(?:finding|key learning|learning point|lesson)s?\s*(?:no\.?\s*)?(\d+)", re.IGNORECASE
)

# Addressees in the codebook's terms; the earliest match in the text wins, ties go to the
# pattern listed first (so "adult mental health" beats "health").
AGENCIES: list[tuple[str, re.Pattern]] = [
    (code, re.compile(rx, re.IGNORECASE))
    for code, rx in [
        (
            "national",
            r"department for education|\bdfe\b|government|ofsted|\bcqc\b|home office|"
            r"department of health|nhs england|national panel|practice review panel|"
            r"\bministers?\b",
        ),
        ("adult_mental_health", r"adult mental health|mental health (?:trust|services?)"),
        ("primary_care", r"\bgps?\b|general practi|primary care"),
        ("early_years", r"early years|nurser(?:y|ies)|children's centres?"),
        ("youth_justice", r"youth justice|youth offending|\byot\b"),
        (
            "substance_misuse",
            r"substance misuse|drug and alcohol|drug(?:s)? service|alcohol service",
        ),
        ("voluntary_sector", r"voluntary|charit(?:y|ies)|third sector"),
        ("commissioners", r"commissioners?\b|\bcommission(?:ing)? bod"),
        (
            "all_agencies",
            r"all agencies|each agency|every agency|all partner|partner agencies|"
            r"all organisations|agencies should",
        ),
        (
            "board",
            r"\blscbs?\b|safeguarding children(?:'s)? board|safeguarding (?:children )?"
            r"partnership|safeguarding partners|\bthe board\b|\bthe partnership\b|"
            r"\bthe partners\b|\bbusiness unit\b|\bboard\b",
        ),
        (
            "children_social_care",
            r"children's social care|social care|social work|"
            r"children's services|local authority|\bcsc\b",
        ),
        ("police", r"\bpolice\b|constabulary"),
        ("probation", r"probation|\bcrc\b|\bnps\b"),
        ("housing", r"housing|landlords?"),
        ("education", r"schools?\b|education|colleges?\b|academ(?:y|ies)"),
        (
            "health",
            r"health|midwi|hospital|\bnhs\b|\bicbs?\b|\bccgs?\b|paediatric|nurs(?:e|ing)|"
            r"camhs|ambulance|emergency department|a&e",
        ),
    ]
]


@dataclass
class Finding:
    number: str | None
    text: str = ""
    page: int | None = None


@dataclass
class Recommendation:
    """One recommendation as found, with where it sits and what it follows."""

    number: str | None
    text: str
    page: int | None
    addressee: str | None
    finding: str | None = None
    finding_number: str | None = None
    section: str = ""
    timescale: str | None = None
    subpoints: int = 0
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def normalise_for_match(text: str) -> str:
    """Lower case, markers and punctuation dropped: how two extractions of one text compare."""
    text = re.sub(r"\((?:[a-z]|[ivx]+)\)|[•●▪■◦‣]", " ", text.lower())
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def similarity(a: str, b: str) -> float:
    a, b = normalise_for_match(a), normalise_for_match(b)
    if not a or not b:
        return 0.0
    if min(len(a), len(b)) / max(len(a), len(b)) < SAME_ITEM - 0.05:
        return SequenceMatcher(None, a, b, autojunk=False).quick_ratio() * 0.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def addressee_of(text: str) -> str | None:
    """The agency a text names first (in the subject before "should", where there is one)."""
    if not text:
        return None
    modal = MODAL.search(text)
    head = text[: modal.start()] if modal and modal.start() > 0 else text[:80]
    best: tuple[int, int, str] | None = None
    for rank, (code, rx) in enumerate(AGENCIES):
        m = rx.search(head)
        if m and (best is None or (m.start(), rank) < best[:2]):
            best = (m.start(), rank, code)
    return best[2] if best else None


def number_of(marker: str | None) -> str | None:
    if marker is None or marker in "•●▪■◦‣∙·*-–":
        return None
    m = re.sub(r"^(?:recommendation|rec\.?)\s*", "", marker.strip(), flags=re.IGNORECASE)
    return m.strip(" .:)(-–").replace(" ", "") or None


def marker_style(marker: str, level: int = 0) -> tuple[str, int]:
    """The numbering family of a marker and its depth: ``("decimal", 2)`` for ``3.1``."""
    m = marker.strip().lower()
    if re.match(r"^(?:recommendation|rec\.?)\s", m):
        return ("recommendation", level)
    if re.match(r"^r\s?\d", m):
        return ("r", level)
    if re.match(r"^\d", m):
        return ("decimal", len(re.findall(r"\d+", m)) + level)
    if re.match(r"^\(?(?:i|ii|iii|iv|v|vi|vii|viii|ix|x|xi|xii)[.)]$", m) and m not in ("(i)",):
        return ("roman", level)
    if re.match(r"^\(?[a-z][.)]$", m):
        return ("alpha", level)
    return ("bullet", level)


def ordinal(marker: str) -> int | None:
    """The position a marker counts: 3 for ``3.``, ``1.3``, ``R3``, ``(c)`` and ``iii.``."""
    m = marker.strip().lower().strip("().:-– ")
    m = re.sub(r"^(?:recommendation|rec\.?)\s*", "", m)
    numbers = re.findall(r"\d+", m)
    if numbers:
        return int(numbers[-1])
    roman = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"]
    if m in roman and m not in ("v", "x"):
        return roman.index(m) + 1
    if len(m) == 1 and m.isalpha():
        return ord(m) - ord("a") + 1
    return None


_INLINE_MARKER = re.compile(r"(?:^|\s)(\(?)([a-z]|[ivx]{1,4}|\d{1,2})\)(?=\s)")


def continues_inline_list(text: str, marker: str) -> bool:
    """``(b)`` after a text whose last bracketed marker is ``(a)``: that list goes on."""
    m = re.fullmatch(r"(\(?)([a-z]|[ivx]{1,4}|\d{1,2})\)", marker.strip().lower())
    if m is None:
        return False
    found = [x for x in _INLINE_MARKER.finditer(text.lower()) if x.group(1) == m.group(1)]
    if not found:
        return False
    before, after = ordinal(found[-1].group(2)), ordinal(m.group(2))
    return before is not None and after is not None and after == before + 1


@dataclass
class _Paused:
    section: str
    title: str
    addressee: str | None
    top: tuple[str, int] | None
    last: int | None  # the ordinal of the last item found
    finding: Finding | None
    headings: list[str] = field(default_factory=list)  # the headings seen since


class _Walker:
    def __init__(self) -> None:
        self.section: str | None = None  # "rec", "find", "both", "questions" or None
        self.section_title = ""
        self.section_addressee: str | None = None
        self.agency: str | None = None
        self.finding: Finding | None = None
        self.findings: dict[str, Finding] = {}
        self.filling: Finding | None = None  # a finding whose paragraphs are being read
        self.items: list[Recommendation] = []
        self.item: Recommendation | None = None
        self.top: tuple[str, int] | None = None
        self.columns: dict[str, int] | None = None
        self.page: int | None = None  # the page of the latest paragraph, item or row
        # A section a heading ended at a page break, kept in case the heading was page
        # furniture: the numbering of the next item or finding shows whether it goes on.
        self.paused: _Paused | None = None
        self.item_style: tuple[str, int] | None = None  # the numbering of the latest item

    # -- sections
    def heading(self, block: Block) -> None:
        text = block.text
        marker, rest = split_marker(text)
        if marker is not None and self.continues_items(marker, rest, block):
            self.marked(marker, rest, block)  # "3.4 Train staff ..." set apart like a title
            return
        title = rest if marker and re.match(r"^\d", marker) else text
        self.item = None
        fm = FINDING_START.match(title)
        if fm:
            paused = self.paused
            if (
                self.section is None
                and paused is not None
                and paused.section == "both"
                and paused.finding is not None
                and paused.finding.number is not None
                and int(fm.group(1)) == int(paused.finding.number) + 1
            ):
                self.resume()  # "Finding 4" after "Finding 3": the section goes on
            self.open_finding(fm.group(1), block)
            if self.section in (None, "rec") or self.section == "questions":
                self.section = "find" if self.section != "both" else "both"
            return
        if QUESTIONS.match(title):
            self.section, self.top = "questions", None
            self.filling = None
            return
        agency = addressee_of(title) if len(title) < 60 else None
        if (
            self.section in ("rec", "both")
            and agency
            and not REC_HEADING.search(title)
            and not FINDING_HEADING.search(title)
        ):
            self.agency, self.top, self.filling = agency, None, None
            return
        last_ordinal = ordinal(self.items[-1].number or "") if self.items else None
        self.filling = None
        self.agency = None
        self.top = None
        self.columns = None
        if REC_HEADING.search(title) and not NOT_REC_HEADING.search(title):
            self.section = "both" if FINDING_HEADING.search(title) else "rec"
            self.section_title = title
            self.section_addressee = addressee_of(
                re.sub(r"recommendations?", "", title, flags=re.IGNORECASE)
            )
            if self.section == "rec" and not re.search(r"finding|learning", title, re.I):
                self.finding = None
        elif FINDING_HEADING.search(title):
            self.section, self.section_title = "find", title
            self.finding = None
        else:
            if (
                self.section in ("rec", "both", "questions")
                and block.page is not None
                and self.page is not None
                and block.page != self.page
            ):
                self.paused = _Paused(
                    self.section,
                    self.section_title,
                    self.section_addressee,
                    self.item_style,
                    last_ordinal,
                    self.finding,
                )
            elif self.section is None and self.paused is not None:
                self.paused.headings.append(title)
            self.section, self.section_title = None, title
            self.finding = None

    def continues_items(self, marker: str, title: str, block: Block) -> bool:
        """A heading numbered as the next item of the list being read, and no section title."""
        if self.section not in ("rec", "both") or self.item is None or self.top is None:
            return False
        if REC_HEADING.search(title) or FINDING_HEADING.search(title):
            return False
        last = ordinal(self.item.number or "")
        number = ordinal(marker)
        return (
            marker_style(marker, block.level) == self.top
            and last is not None
            and number == last + 1
        )

    def resume(self) -> None:
        """Go back into the section a page-furniture heading interrupted."""
        paused = self.paused
        if paused is None:
            return
        self.section, self.section_title = paused.section, paused.title
        self.section_addressee, self.top, self.finding = (
            paused.addressee,
            paused.top,
            paused.finding,
        )
        # an agency heading among the interrupting ones ("Health") still leads what follows
        agencies = [addressee_of(h) for h in paused.headings if len(h) < 60]
        self.agency = next((a for a in reversed(agencies) if a), None)
        self.paused = None

    def resume_if_numbered(self, block: Block) -> None:
        """Resume a paused section when the block's number follows on from its last item."""
        paused = self.paused
        if paused is None or self.section is not None or paused.top is None:
            return
        marker = block.marker if block.kind == ITEM else split_marker(block.text)[0]
        if marker is None or marker_style(marker, block.level) != paused.top:
            return
        number = ordinal(marker)
        if number is not None and paused.last is not None and number == paused.last + 1:
            self.resume()

    def open_finding(self, number: str | None, block: Block, text: str = "") -> None:
        f = Finding(number, text, block.page)
        if number is not None:
            self.findings.setdefault(number, f)
        self.finding = self.filling = f

    # -- items
    def new_item(self, marker: str | None, text: str, block: Block) -> Recommendation:
        rec = Recommendation(number_of(marker), text, block.page, None, section=self.section_title)
        rec.addressee = self.agency or addressee_of(text) or self.section_addressee
        if self.section in ("both", "questions") and self.finding is not None:
            rec.finding, rec.finding_number = self.finding.text or None, self.finding.number
        self.items.append(rec)
        self.item = rec
        self.filling = None
        return rec

    @staticmethod
    def sub_point(item: Recommendation, marker: str | None, text: str) -> None:
        item.text = f"{item.text} {marker + ' ' if marker else ''}{text}".strip()
        item.subpoints += 1

    def marked(self, marker: str, text: str, block: Block) -> None:
        style = marker_style(marker, block.level)
        if self.section == "find":
            num = number_of(marker)
            self.open_finding(num, block, text)
            return
        if (
            self.item is not None
            and style == self.top
            and (
                (self.item.text.rstrip().endswith(":") and ordinal(marker) == 1)
                or continues_inline_list(self.item.text, marker)
            )
        ):
            # "... The caseworker should:" then "(a) meet ...", or "... without: (a) a
            # review;" then "(b) a discussion ...": the item's own list, not the next item.
            self.sub_point(self.item, marker, text)
            return
        if self.top is None or style == self.top or self.item is None:
            if (
                self.item is not None
                and self.top is not None
                and style != self.top
                and style[0] in ("alpha", "roman", "bullet")
            ):
                self.sub_point(self.item, marker, text)
                return
            if self.top is None:
                self.top = style
            self.new_item(marker, text, block)
            self.item_style = style
        else:
            self.sub_point(self.item, marker, text)

    def row(self, block: Block) -> None:
        cells = block.cells
        if not any(cells):
            return
        lowered = [c.lower() for c in cells]
        if any("recommendation" in c or c in ("action", "actions") for c in lowered) and all(
            len(c) < 40 for c in cells
        ):
            cols: dict[str, int] = {}
            for j, c in enumerate(lowered):
                if "recommendation" in c or c.startswith("action"):
                    cols.setdefault("text", j)
                elif re.match(r"^(no\.?|number|ref|#|rec\.? no)", c):
                    cols.setdefault("number", j)
                elif re.search(r"agenc|lead|organisation|addressee|owner|responsib", c):
                    cols.setdefault("agency", j)
                elif re.search(r"timescale|date|by when|deadline", c):
                    cols.setdefault("timescale", j)
            self.columns = cols
            if self.section is None:
                self.section, self.section_title = "rec", "table"
            self.item = None
            return
        if self.section not in ("rec", "both", "questions"):
            return
        cols = self.columns or {"text": max(range(len(cells)), key=lambda j: len(cells[j]))}
        text = cells[cols["text"]] if cols["text"] < len(cells) else ""
        if not text or not (MODAL.search(text) or len(text) > 40):
            return
        number = cells[cols["number"]] if "number" in cols and cols["number"] < len(cells) else None
        rec = self.new_item(number or None, text, block)
        if "agency" in cols and cols["agency"] < len(cells):
            rec.addressee = addressee_of(cells[cols["agency"]]) or rec.addressee
        if "timescale" in cols and cols["timescale"] < len(cells):
            rec.timescale = cells[cols["timescale"]] or None
        self.item = None

    def paragraph(self, block: Block) -> None:
        text = block.text
        fm = FINDING_START.match(text)
        if fm and self.section in ("find", "both", "questions", None):
            self.open_finding(fm.group(1), block, text[fm.end() :])
            if self.section == "questions":
                self.section = "find"
            return
        if QUESTIONS.match(text) and len(text) < 90:
            self.section, self.top, self.item = "questions", None, None
            self.filling = None
            return
        if self.item is not None and (
            text[:1].islower()
            or self.item.text.rstrip()[-1:] in ":;,"
            or (block.after_break and self.item.text.rstrip()[-1:] not in ".?!)")
        ):
            self.item.text = f"{self.item.text} {text}"
            return
        if self.section == "questions" and text.rstrip().endswith("?"):
            self.new_item(None, text, block)
            return
        if self.filling is not None:
            if self.filling.text and block.after_break and self.filling.text[-1:] not in ".?!":
                self.filling.text = f"{self.filling.text} {text}"
            elif not self.filling.text:
                self.filling.text = text
            else:
                self.filling.text = f"{self.filling.text} {text}"
            return
        if self.section == "both" and self.item is None:
            self.open_finding(None, block, text)  # a rationale paragraph before the items
        self.item = None

    def walk(self, blocks: Sequence[Block]) -> list[Recommendation]:
        for block in blocks:
            if block.kind != HEADING:
                self.resume_if_numbered(block)
                self.paused = None
                self.page = block.page if block.page is not None else self.page
            if block.kind == HEADING:
                self.heading(block)
            elif block.kind == ROW:
                self.row(block)
            elif block.kind == ITEM and block.marker:
                self.marked(block.marker, block.text, block)
            elif block.kind in (ITEM, PARA):
                marker, rest = split_marker(block.text)
                if (
                    marker is not None
                    and not FINDING_START.match(block.text)
                    and self.section in ("rec", "both", "questions", "find")
                ):
                    self.marked(marker, rest, block)
                else:
                    self.paragraph(block)
        return self.items


def _cite(items: list[Recommendation], findings: dict[str, Finding]) -> None:
    for rec in items:
        if rec.finding is not None:
            continue
        cites = list(CITATION.finditer(rec.text))
        m = cites[-1] if cites else None  # the last citation: "(Finding 3)" ends the text
        if m is not None and m.group(1) in findings and findings[m.group(1)].text:
            rec.finding = findings[m.group(1)].text
            rec.finding_number = m.group(1)


def _merge_repeats(items: list[Recommendation]) -> list[Recommendation]:
    kept: list[Recommendation] = []
    words: list[set[str]] = []
    for rec in items:
        mine = set(normalise_for_match(rec.text).split())
        for earlier, theirs in zip(kept, words, strict=True):
            # Word overlap first: a cheap filter before the character-level ratio.
            if len(mine & theirs) < 0.7 * max(len(mine | theirs), 1):
                continue
            if similarity(rec.text, earlier.text) >= SAME_ITEM:
                earlier.addressee = earlier.addressee or rec.addressee
                earlier.timescale = earlier.timescale or rec.timescale
                earlier.sources.append(f"repeated in '{rec.section}'")
                break
        else:
            kept.append(rec)
            words.append(mine)
    return kept


def find_recommendations(blocks: Sequence[Block]) -> list[Recommendation]:
    """The recommendations of one document, in order, each once."""
    walker = _Walker()
    items = walker.walk(blocks)
    for rec in items:
        rec.text = " ".join(rec.text.split())
        if rec.finding:
            rec.finding = " ".join(rec.finding.split())
    _cite(items, walker.findings)
    return _merge_repeats(items)


__all__ = [
    "Recommendation",
    "find_recommendations",
    "normalise_for_match",
    "similarity",
    "addressee_of",
]
