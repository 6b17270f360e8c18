"""The common shape every reader produces: a flat sequence of blocks in reading order.

Review reports arrive as PDF, Word, web pages and pasted text, but the section and item
finder should not care which: each reader turns its format into headings, paragraphs, list
items and table rows with the page they start on, and the finder works on those alone.
Cleaning that all text formats need (ligatures, words hyphenated at line ends, page
furniture) lives here too, so PDF and pasted text are repaired the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HEADING, PARA, ITEM, ROW = "heading", "para", "item", "row"


@dataclass
class Block:
    """One unit of a document: a heading, a paragraph, a list item or a table row.

    ``marker`` is a list item's number or bullet where the format stores it apart from the
    text (Word's automatic numbering, HTML lists); ``level`` its nesting depth. ``after_break``
    says the block starts at the top of a page or column, where a sentence may continue.
    """

    kind: str
    text: str
    page: int | None = None
    marker: str | None = None
    level: int = 0
    cells: list[str] = field(default_factory=list)
    after_break: bool = False


LIGATURES = {
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl",
    "\ufb05": "st",
    "\ufb06": "st",
}
_LIGATURE_RE = re.compile("|".join(LIGATURES))
# Bullets as PDF text layers spell them: WinAnsi 0x95 decoded as a control character, and
# the private-use code points of the Symbol and Wingdings fonts.
BULLETS = str.maketrans(
    {c: "•" for c in "\x7f\x95\uf0b7\uf0a7\uf076\uf0d8\uf0fc\u25aa\u25cf\u2219"}
)
_SPACE_RE = re.compile(r"\s+")
PAGE_NUMBER_RE = re.compile(
    r"^\s*(?:page\s+)?[-–]?\s*\d{1,4}\s*[-–]?(?:\s*(?:of|/)\s*\d{1,4})?\s*$", re.IGNORECASE
)


def normalise_space(text: str) -> str:
    """Ligatures expanded, soft hyphens and zero-width characters dropped, spaces collapsed."""
    text = _LIGATURE_RE.sub(lambda m: LIGATURES[m.group(0)], text)
    text = text.translate(BULLETS)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _SPACE_RE.sub(" ", text.replace("\u00a0", " ")).strip()


def furniture_key(text: str) -> str:
    """A running header or footer with its page number masked, for spotting repeats."""
    return re.sub(r"\d+", "#", normalise_space(text).lower())


def repeated_lines(
    lines_per_page: Sequence[Iterable[str]], share: float = 0.5, minimum: int = 3
) -> set[str]:
    """Keys of lines that recur on at least ``share`` of the pages (and ``minimum`` times)."""
    counts: Counter[str] = Counter()
    for lines in lines_per_page:
        counts.update({furniture_key(t) for t in lines if t.strip()})
    need = max(minimum, int(share * len(lines_per_page) + 0.999))
    return {key for key, n in counts.items() if n >= need and len(key) < 120}


class Dehyphenator:
    """Joins words split at line ends, keeping the hyphen of compounds the document spells so.

    "multi-\\nagency" stays "multi-agency" when the document writes "multi-agency" elsewhere
    and never "multiagency"; "safe-\\nguarding" becomes "safeguarding".
    """

    def __init__(self, full_text: str):
        words = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)*", full_text)
        self.vocab = Counter(w.lower() for w in words)

    def join(self, left: str, right: str) -> str:
        """Concatenate two consecutive lines of one paragraph."""
        left = left.rstrip()
        right = right.lstrip()
        if not left:
            return right
        if not right:
            return left
        m = re.search(r"([A-Za-z]+)-$", left)
        n = re.match(r"([a-z][A-Za-z]*)", right)
        if m and n:
            whole = (m.group(1) + n.group(1)).lower()
            compound = f"{m.group(1)}-{n.group(1)}".lower()
            if self.vocab.get(compound, 0) > 0 and self.vocab.get(whole, 0) == 0:
                return left + right
            return left[:-1] + right
        return f"{left} {right}"


ROMAN = r"(?:i|ii|iii|iv|v|vi|vii|viii|ix|x|xi|xii)"
MARKER_RE = re.compile(
    r"^(?P<marker>(?:recommendation|rec\.?)\s+(?:R\s?)?\d+(?:\.\d+)*\s*[:.)\-–]?"
    r"|R\s?\d+(?:\.\d+)*[:.)]?"
    r"|\d{1,2}(?:\.\d{1,2})+\.?"
    r"|\d{1,3}[.)]"
    rf"|\((?:[a-z]|{ROMAN})\)|(?:[a-z]|{ROMAN})[.)]"
    r"|[•●▪■◦‣∙·*\-–])\s+",
    re.IGNORECASE,
)
HEADING_WORDS = re.compile(
    r"\b(recommendations?|findings?|key learning|lessons? learn(?:ed|t)|learning|conclusions?|"
    r"introduction|background|appendix|summary|analysis|questions for|issues for|"
    r"methodology|terms of reference|glossary|references)\b",
    re.IGNORECASE,
)
MODAL = re.compile(
    r"\b(should|must|will|shall|needs? to|is asked to|are asked to|ensure)\b", re.IGNORECASE
)


def split_marker(text: str) -> tuple[str | None, str]:
    """``("3.", "The board should ...")`` for a numbered line, ``(None, text)`` otherwise."""
    m = MARKER_RE.match(text)
    if not m:
        return None, text
    return m.group("marker").strip(), text[m.end() :]


def closes_bracket(before: str, marker: str) -> bool:
    """A marker such as ``4)`` that closes a bracket the text before it left open."""
    return (
        marker.endswith(")")
        and not marker.startswith("(")
        and before.count("(") > before.count(")")
    )


def looks_like_heading(text: str) -> bool:
    """Short, unpunctuated lines such as "4. Recommendations" or "Children's social care"."""
    text = text.strip()
    if not text or len(text) > 80 or text[-1] in ".;,":
        return False
    _, rest = split_marker(text)
    if MODAL.search(rest) or rest[:1].islower():
        return False
    return len(rest.split()) <= 10


@dataclass
class Line:
    """One physical line of a paginated text, as readers of PDF and pasted text see it."""

    text: str
    page: int
    bold: bool = False
    gap_before: bool = False  # a blank line or a paragraph-sized vertical gap precedes it
    after_break: bool = False  # first line of a page or column
    heading: bool | None = None  # decided by the reader when it knows (fonts), else guessed
    continues: bool = False  # the reader knows it carries on the line before ("K. Smith")


def lines_to_blocks(lines: Sequence[Line]) -> list[Block]:
    """Group physical lines into headings, paragraphs and numbered or bulleted items."""
    dehyphen = Dehyphenator("\n".join(line.text for line in lines))
    blocks: list[Block] = []
    current: Block | None = None
    last_line: Line | None = None
    for line in lines:
        text = normalise_space(line.text)
        if not text:
            continue
        if text.startswith("\x00"):  # a placeholder a reader puts where a table row stands
            blocks.append(Block(PARA, text, line.page))
            current = None
            continue
        heading = line.heading
        if heading is None:
            heading = line.gap_before and looks_like_heading(text)
        marker, _ = split_marker(text)
        if marker is not None and current is not None and closes_bracket(current.text, marker):
            marker = None  # "(Finding" at a line end, "4) ..." on the next: not an item
        if line.continues and current is not None and current.kind != HEADING:
            current.text = dehyphen.join(current.text, text)
            last_line = line
            continue
        starts_new = (
            current is None
            or heading
            or marker is not None
            or line.gap_before
            or current.kind == HEADING
            or (line.after_break and current.text[-1:] in ".?!" and not text[:1].islower())
        )
        if (
            heading
            and current is not None
            and current.kind == HEADING
            and last_line is not None
            and last_line.bold
            and line.bold
            and not line.gap_before
            and not line.after_break
        ):
            current.text = dehyphen.join(current.text, text)  # a heading wrapped over lines
        elif starts_new or current is None:
            current = Block(
                HEADING if heading else PARA, text, line.page, after_break=line.after_break
            )
            blocks.append(current)
        else:
            current.text = dehyphen.join(current.text, text)
        last_line = line
    return blocks
