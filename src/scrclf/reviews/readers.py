"""Readers that turn review reports (PDF, DOCX, HTML, text) into blocks in reading order.

Published reviews are PDFs laid out for print (running headers, page numbers, two columns,
tables of recommendations), Word files whose numbers exist only in the numbering
definitions, web pages wrapped in navigation and cookie banners, and text pasted out of PDF
viewers. Each reader undoes what its format adds, on well-kept libraries with permissive
licences: pypdf (text with positions and fonts), python-docx (paragraphs, tables and the
numbering part) and BeautifulSoup with lxml. The libraries are optional; a missing one is
named with the extra that installs it.
"""

from __future__ import annotations

import itertools
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scrclf.errors import DataError

from .blocks import (
    HEADING,
    HEADING_WORDS,
    ITEM,
    PAGE_NUMBER_RE,
    PARA,
    ROW,
    Block,
    Dehyphenator,
    Line,
    furniture_key,
    lines_to_blocks,
    looks_like_heading,
    normalise_space,
    repeated_lines,
    split_marker,
)
from .finder import addressee_of, continues_inline_list

if TYPE_CHECKING:
    from bs4 import Tag

SUFFIXES = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".txt": "txt",
    ".md": "txt",
    ".markdown": "txt",
    ".text": "txt",
}


class DocumentError(DataError):
    """A document that cannot be read; the message says why and what would help."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class Document:
    path: Path
    format: str
    blocks: list[Block]
    pages: int | None = None


def _need(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise DocumentError(
            "", f"reading this format needs {package} (pip install 'scrclf[reviews]')"
        ) from None


def document_format(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


def read_document(path: str | Path) -> Document:
    """Read one report; raises :class:`DocumentError` when it cannot be read."""
    path = Path(path)
    fmt = document_format(path)
    if fmt is None:
        raise DocumentError(
            path, f"unsupported file type '{path.suffix}'; use one of {sorted(set(SUFFIXES))}"
        )
    try:
        reader = {"pdf": read_pdf, "docx": read_docx, "html": read_html, "txt": read_text}[fmt]
        return reader(path)
    except DocumentError as err:
        if err.path:
            raise
        raise DocumentError(path, err.problem) from None
    except OSError as err:
        raise DocumentError(path, f"cannot read the file ({err.strerror or err})") from None


# ------------------------------------------------------------------------------------ PDF

# Lines closer than this share a baseline; a vertical step above PARA_GAP line heights
# starts a paragraph (body text in published reviews is set at 1.2-1.5 line spacing).
SAME_LINE = 2.5
PARA_GAP = 1.45
# Running headers and footers sit in these top and bottom shares of the page.
MARGIN_SHARE = 0.06
# Average glyph width as a share of the font size, to estimate where a text run ends.
GLYPH = 0.5


@dataclass
class _Frag:
    x: float
    y: float
    text: str
    size: float
    bold: bool

    @property
    def end(self) -> float:
        return self.x + GLYPH * self.size * len(self.text)


def _pdf_fragments(page) -> list[_Frag]:
    frags: list[_Frag] = []

    def visit(text, cm, tm, font_dict, font_size):
        if not text or not text.strip():
            return
        # Position in user space: the text matrix composed with the current matrix.
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        size = abs(font_size * (tm[3] or tm[0]) * (cm[3] or cm[0])) or 10.0
        name = str((font_dict or {}).get("/BaseFont", "")) if font_dict else ""
        bold = bool(re.search(r"bold|black|heavy|semibold", name, re.IGNORECASE))
        for part in text.split("\n"):
            if part.strip():
                frags.append(_Frag(x, y, part, size, bold))
            y -= size * 1.2

    page.extract_text(visitor_text=visit)
    return frags


def _group_lines(frags: list[_Frag]) -> list[list[_Frag]]:
    """Fragments on one baseline, left to right; lines top to bottom."""
    rows: list[list[_Frag]] = []
    for f in sorted(frags, key=lambda f: (-f.y, f.x)):
        if rows and abs(rows[-1][0].y - f.y) <= SAME_LINE:
            rows[-1].append(f)
        else:
            rows.append([f])
    return [sorted(r, key=lambda f: f.x) for r in rows]


def _split_columns(lines: list[list[_Frag]], width: float) -> list[list[list[_Frag]]] | None:
    """Reading order for a two-column page: full-width bands, then left column, then right.

    A page is two-column when many runs start at one x near the middle and the runs left of
    it end before it. Returns the column-ordered lines or None for a single column.
    """
    starts: dict[int, int] = defaultdict(int)
    for line in lines:  # the first run of each line in the middle band of the page
        middle = [f for f in line if 0.35 * width < f.x < 0.65 * width]
        if middle:
            starts[round(middle[0].x / 3)] += 1
    if not starts:
        return None
    most = max(starts.values())
    if most < 5:
        return None
    # The leftmost frequent start: indented list text starts further right than the column.
    key = min(k for k, n in starts.items() if n >= max(3, 0.3 * most))
    count = starts[key]
    split = key * 3 - 3
    reach = split + 0.3 * (width - split)  # a run this long on the left spans both columns
    crossing = sum(1 for line in lines for f in line if f.x < split and f.end > reach)
    if crossing > count:
        return None
    ordered: list[list[list[_Frag]]] = []
    left: list[list[_Frag]] = []
    right: list[list[_Frag]] = []
    for line in lines:
        full = any(f.x < split and f.end > reach for f in line)
        if full and (left or right) and len(line) == 1:
            ordered.extend([left, right])
            left, right = [], []
        if full and len(line) == 1:
            ordered.append([line])
            continue
        lpart = [f for f in line if f.x < split]
        rpart = [f for f in line if f.x >= split]
        if lpart:
            left.append(lpart)
        if rpart:
            right.append(rpart)
    ordered.extend([left, right])
    return [column for column in ordered if column]


def read_pdf(path: Path) -> Document:
    _need("pypdf", "pypdf")
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # noqa: BLE001 - pypdf raises several types for unknown ciphers
                opened = False
            if not opened:
                raise DocumentError(
                    path,
                    "the PDF is encrypted with a password; open it with "
                    "the password and save an unprotected copy",
                )
        pages = list(reader.pages)
        page_frags = [_pdf_fragments(p) for p in pages]
        boxes = [(float(p.mediabox.width), float(p.mediabox.height)) for p in pages]
    except DocumentError:
        raise
    except (
        PdfReadError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        RecursionError,
    ) as err:
        raise DocumentError(
            path,
            f"the PDF is damaged or not a PDF ({type(err).__name__}: "
            f"{str(err)[:120]}); open it in a PDF viewer and save it "
            f"again",
        ) from None
    if not any(page_frags):
        raise DocumentError(
            path,
            "no text layer: the PDF looks scanned and needs OCR first "
            "(e.g. `ocrmypdf in.pdf out.pdf`)",
        )
    # Running headers and footers: margin lines that recur across pages, and page numbers.
    margin_text = []
    for frags, (_, h) in zip(page_frags, boxes, strict=True):
        margin_text.append(
            [
                " ".join(f.text for f in line)
                for line in _group_lines(
                    [f for f in frags if f.y > h * (1 - MARGIN_SHARE) or f.y < h * MARGIN_SHARE]
                )
            ]
        )
    running = repeated_lines(margin_text, minimum=2) if len(pages) > 1 else set()
    out: list[Line] = []
    table_cols: list[float] | None = None
    rows: list[Block] = []
    for number, (frags, (w, h)) in enumerate(zip(page_frags, boxes, strict=True), start=1):
        body = []
        for line in _group_lines(frags):
            in_margin = line[0].y > h * (1 - MARGIN_SHARE) or line[0].y < h * MARGIN_SHARE
            text = " ".join(f.text for f in line)
            if in_margin and (furniture_key(text) in running or PAGE_NUMBER_RE.match(text)):
                continue
            if in_margin:  # a margin line of several runs: drop the page-number runs alone
                line = [
                    f
                    for f in line
                    if not PAGE_NUMBER_RE.match(f.text) and furniture_key(f.text) not in running
                ]
                if not line:
                    continue
            body.append(line)
        columns = _split_columns(body, w) or [body]
        for column in columns:
            prev_y = None
            leading = None
            first = True
            for line in column:
                if table_cols is None and len(line) >= 3 and all(f.bold for f in line):
                    table_cols = [f.x for f in line]  # a table's header row
                    rows.append(Block(ROW, "", number, cells=[f.text for f in line]))
                    out.append(Line("\x00table", number, heading=False))
                    prev_y = line[0].y
                    continue
                if table_cols is not None:
                    if _table_line(line, table_cols, prev_y, first):
                        _add_to_table(rows, line, table_cols, number, out)
                        prev_y = line[0].y
                        first = False
                        continue
                    table_cols = None
                step = None if prev_y is None else prev_y - line[0].y
                size = max(f.size for f in line)
                gap = step is not None and (
                    step > PARA_GAP * max(size * 1.15, leading or 0) or step < 0
                )
                if step is not None and step > 0:
                    leading = step if leading is None else min(leading, step)
                text = " ".join(f.text for f in line)
                bold = all(f.bold for f in line)
                heading = bold and looks_like_heading(text) or (bold and len(text) < 100)
                out.append(
                    Line(
                        text, number, bold=bold, gap_before=gap, after_break=first, heading=heading
                    )
                )
                prev_y = line[0].y
                first = False
    blocks = _merge_tables(lines_to_blocks(out), rows)
    return Document(path, "pdf", blocks, pages=len(pages))


def _table_line(line: list[_Frag], cols: list[float], prev_y: float | None, first: bool) -> bool:
    aligned = all(min(abs(f.x - c) for c in cols) < 6 for f in line)
    if not aligned:
        return False
    if len(line) == 1 and line[0].x < cols[0] + 6 and line[0].end > cols[1] + 12:
        return False  # a paragraph starting at the left margin after the table
    if prev_y is not None and not first and prev_y - line[0].y > 2.6 * line[0].size:
        return False
    return True


def _add_to_table(
    rows: list[Block], line: list[_Frag], cols: list[float], page: int, out: list[Line]
) -> None:
    cells = [""] * len(cols)
    for f in line:
        j = min(range(len(cols)), key=lambda c: abs(f.x - cols[c]))
        cells[j] = (cells[j] + " " + f.text).strip()
    if cells[0] or not rows or rows[-1].cells and rows[-1].text == "header":
        rows.append(Block(ROW, "", page, cells=cells))
        out.append(Line("\x00table", page, heading=False))
    else:
        for j, cell in enumerate(cells):
            if cell:
                rows[-1].cells[j] = _join_cell(rows[-1].cells[j], cell)


def _join_cell(left: str, right: str) -> str:
    return Dehyphenator(left + " " + right).join(left, right)


def _merge_tables(blocks: list[Block], rows: list[Block]) -> list[Block]:
    """Put table rows where their placeholder lines stood."""
    it = iter(rows)
    out: list[Block] = []
    for block in blocks:
        if block.text.startswith("\x00table"):
            n = block.text.count("\x00table")
            out.extend(next(it) for _ in range(n))
        else:
            out.append(block)
    for block in out:
        if block.kind == ROW:
            block.cells = [normalise_space(c) for c in block.cells]
            block.text = " | ".join(block.cells)
    return out


# ----------------------------------------------------------------------------------- text

# A line this long or longer marks text that was not hard-wrapped (one paragraph a line).
UNWRAPPED = 160
# A line ends early, before the wrap width, when the next line's first word would still
# have fitted on it with this share of the width to spare: the break was the author's.
EARLY_SLACK = 0.1
# What a page-number line of pasted text becomes once it has split the pages.
PAGE_MARK = "\x00page"
# Pages of pasted text hold at least this many lines; numbered furniture recurs no closer.
PAGE_LINES = 15
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+")
_RULE = re.compile(r"^\s*(?:={3,}|-{3,}|_{3,})\s*$")
_SENTENCE_END = re.compile(r"(?:[.?!:;][\"'’”)\]]*|\))$")
# A pasted table row: its number (or the dash of an unnumbered row), then its text.
_PASTED_ROW = re.compile(r"^(\d{1,3}|R\d{1,3}|[-–•])\s+([A-Z].*)$")
_INITIAL = re.compile(r"^(?:[A-Za-z]|[ivxIVX]{1,4})\.\s")
_GO_ON_WORDS = set(
    "a an the of to and or for with in on by at from that which who whom whose its their his "
    "her our as is are was were be been should must will would could may not than into "
    "about between under within without".split()
)
_ROW_START = re.compile(r"^(?:\d{1,3}|R\d{1,3}|[-–•])\s+[A-Z]")
_CELLS = re.compile(r"\s{2,}|\t")


@dataclass
class _TextLine:
    text: str  # indentation kept: the wrap width counts it
    page: int
    blank_before: bool  # a blank line separates it from the previous content line
    break_before: bool  # page furniture or a page break separates it from that line
    heading: bool | None = None
    bare: bool = False  # an item's number alone on its line, its text on the next


def _names_section(text: str) -> bool:
    """A numbered section title, a section word ("Findings", "Appendix 2") or an agency."""
    if re.match(r"\d{1,2}(?:\.\d{1,2})*\.?\s+[A-Z]", text) or HEADING_WORDS.match(text):
        return True
    return len(text.split()) <= 5 and addressee_of(text) is not None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _undouble(lines: list[str]) -> list[str]:
    """Text pasted with a blank line after every line: one blank is a line break, two a gap."""
    content = [i for i, x in enumerate(lines) if x.strip()]
    if len(content) < 10:
        return lines
    followed = sum(1 for i in content if i + 1 < len(lines) and not lines[i + 1].strip())
    if followed < 0.75 * len(content):
        return lines
    out: list[str] = []
    blanks = 0
    for line in lines:
        if not line.strip() and "\f" not in line:
            blanks += 1
            continue
        if blanks >= 2:
            out.append("")
        blanks = 0
        out.append(line)
    return out


def _starts_item(line: str) -> bool:
    """The line opens with an item's number or bullet, or is one alone."""
    return split_marker(line.strip() + " ")[0] is not None


def _numbered_furniture(lines: list[str]) -> set[str]:
    """Keys of footers or headers that carry the page number ("Report title | 7").

    They recur with numbers counting up by one, a page of text apart (the last page may be
    short), and one of them opens or closes the text. Numbered headings ("Finding 3") count
    up too, but none stands first or last in a report.
    """
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    content = 0
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        content += 1
        digits = re.findall(r"\d+", stripped)
        if not digits or len(stripped) > 120 or _starts_item(stripped):
            continue
        seen[furniture_key(stripped)].append((int(digits[-1]), content))
    keys = set()
    for key, marks in seen.items():
        if len(marks) < 2 or not (marks[0][1] <= 3 or marks[-1][1] >= content - 1):
            continue
        steps = list(itertools.pairwise(marks))
        if all(b == a + 1 for (a, _), (b, _) in steps) and all(
            there - here >= PAGE_LINES for (_, here), (_, there) in steps[:-1]
        ):
            keys.add(key)
    return keys


def _line_counts(pages: list[list[str]]) -> Counter[str]:
    """How often each line occurs in the whole text, spacing and case aside."""
    return Counter(normalise_space(x).lower() for page in pages for x in page if x.strip())


def _furniture_neighbours(
    pages: list[list[str]], known: set[str], everywhere: Counter[str]
) -> set[str]:
    """Keys of lines that stand next to known furniture on two pages or more, and nowhere
    else: the second line of a two-line running header, a footer line above the number."""
    counts: Counter[str] = Counter()
    for page in pages:
        body = [x.strip() for x in page if x.strip()]
        furniture = [x == PAGE_MARK or furniture_key(x) in known for x in body]
        found = set()
        for k, text in enumerate(body):
            beside = (k > 0 and furniture[k - 1]) or (k + 1 < len(body) and furniture[k + 1])
            if not furniture[k] and beside and not _starts_item(text):
                found.add(normalise_space(text).lower())
        counts.update(found)
    return {
        furniture_key(t)
        for t, n in counts.items()
        if n >= 2 and n == everywhere[t] and len(t) < 120
    }


def _title_headers(pages: list[list[str]], width: float) -> set[str]:
    """Keys of lines opening a later page that repeat the words of the report's title.

    A running header often restates the title ("Serious Case Review: Child A" above
    "Harwick LSCB | Serious Case Review Child A"); in a short report it may show once.
    """
    first = next((x for page in pages for x in page if x.strip() and x != PAGE_MARK), "")
    title = set(re.findall(r"[a-z0-9]+", first.lower()))
    if len(title) < 3 or len(first) > 100:
        return set()
    keys: set[str] = set()
    for page in pages[1:]:
        body = [x for x in page if x.strip() and x != PAGE_MARK]
        for k, line in enumerate(body[:2]):
            words = set(re.findall(r"[a-z0-9]+", line.lower()))
            if title <= words and len(line) < 120 and not _starts_item(line):
                keys.add(furniture_key(line))
            elif (
                k == 1
                and furniture_key(body[0]) in keys
                and _second_header(line)
                and _ends_early(line, body[2] if len(body) > 2 else "", width)
            ):
                keys.add(furniture_key(line))  # "OFFICIAL" under the title-like header
    return keys


def _second_header(line: str) -> bool:
    """Could be the second line of a running header: short, no item, no section title."""
    text = line.strip()
    return (
        len(text) < 80
        and not _starts_item(text)
        and not _ends_sentence(text)
        and not _names_section(text)
        and not HEADING_WORDS.search(text)
        and len(_CELLS.split(text)) < 3  # a table's header row
        and not text[:1].islower()
    )


def _recurring(
    lines_per_page: list[list[str]], everywhere: Counter[str], share: float, minimum: int
) -> set[str]:
    """Keys of lines repeated word for word on ``share`` of the pages (and ``minimum``),
    found only there.

    Unlike :func:`repeated_lines` the numbers must match too: "Finding 2: Seeing the
    child" and "Finding 4: Seeing the child" opening two pages are headings, not a header;
    and a heading repeated through the text ("Questions for the partnership") is no header
    for opening some of its pages.
    """
    counts: Counter[str] = Counter()
    for lines in lines_per_page:
        counts.update({normalise_space(t).lower() for t in lines if t.strip()})
    need = max(minimum, int(share * len(lines_per_page) + 0.999))
    return {
        furniture_key(t)
        for t, n in counts.items()
        if n >= need and n == everywhere[t] and len(t) < 120
    }


def _page_marks(lines: list[str], numbered: set[str]) -> set[int]:
    """Indices of the lines that number pages: page-number lines and numbered furniture
    whose numbers count up page by page. A year alone on a line ("2012") is not one."""
    candidates = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s and PAGE_NUMBER_RE.match(s):
            candidates.append((i, int(re.findall(r"\d+", s)[0])))
        elif s and furniture_key(s) in numbered:
            candidates.append((i, int(re.findall(r"\d+", s)[-1])))
    if not candidates:
        return set()
    # The longest run of numbers rising by one to three (a page may have lost its number).
    best: list[int] = []
    before: list[int | None] = []
    for k, (_, value) in enumerate(candidates):
        links = [j for j in range(k) if 1 <= value - candidates[j][1] <= 3]
        j = max(links, key=lambda j: best[j], default=None)
        best.append(best[j] + 1 if j is not None else 1)
        before.append(j)
    k = max(range(len(candidates)), key=lambda k: best[k])
    if best[k] == 1 and candidates[k][1] > len(lines) // 5 + 2:
        return set()  # one number, too high to count the pages of this text
    chain = set()
    at: int | None = k
    while at is not None:
        chain.add(candidates[at][0])
        at = before[at]
    return chain


def _text_pages(lines: list[str]) -> tuple[list[list[str]], set[str]]:
    """Split pasted text into pages: at form feeds, else at page-number lines.

    A page number closes its page when the numbers sit at the foot of pages and opens one
    when they sit at the top, which shows as a page of text after the last number (or as
    page 1 opening the text). Page-number lines come back as :data:`PAGE_MARK`. Returns
    the pages and the keys of numbered furniture lines.
    """
    numbered = _numbered_furniture(lines)
    parts: list[tuple[str, bool]] = []  # each piece of a line, and whether a form feed led
    for line in lines:
        parts.extend((part, k > 0) for k, part in enumerate(line.split("\f")))
    texts = [part for part, _ in parts]
    marks = _page_marks(texts, numbered)
    texts = [PAGE_MARK if i in marks else t for i, t in enumerate(texts)]
    pages: list[list[str]] = [[]]
    if any(feed for _, feed in parts):
        for text, (_, feed) in zip(texts, parts, strict=True):
            if feed:
                pages.append([])
            pages[-1].append(text)
        return pages, numbered
    if not marks:
        return [texts], numbered
    first, last = min(marks), max(marks)
    before = sum(1 for x in texts[:first] if x.strip())
    after = sum(1 for x in texts[last + 1 :] if x.strip())
    opens = before <= 3 and re.findall(r"\d+", parts[first][0].strip()) == ["1"]
    top = after > max(before, 3) or (opens and after > 0)
    for i, text in enumerate(texts):
        if top and i in marks and any(x.strip() for x in pages[-1]):
            if i != first or before > 3:
                pages.append([])
        pages[-1].append(text)
        if not top and i in marks:
            pages.append([])
    return pages, numbered


def _wrap_width(lines: Sequence[str]) -> float:
    """The width text was wrapped at: nearly every line of a paragraph comes close to it.

    Rows of a table pasted with tabs are left out: they run as long as their cells.
    """
    lengths = sorted(len(x.rstrip()) for x in lines if "\t" not in x.strip())
    if not lengths:
        return float(UNWRAPPED)
    return float(lengths[int(0.9 * (len(lengths) - 1))])


def _ends_sentence(line: str) -> bool:
    """Ends a sentence or clause, perhaps with a closing quote or a bracketed citation."""
    return bool(_SENTENCE_END.search(line.rstrip()))


def _open_ended(line: str) -> bool:
    """Ends on a comma or a word no sentence ends on ("the", "of", "should")."""
    words = line.rstrip().split()
    return bool(words) and (words[-1].endswith(",") or words[-1] in _GO_ON_WORDS)


def _ends_early(line: str, following: str, width: float) -> bool:
    """The line stops where the next word would still have fitted: a break the author made."""
    if width >= UNWRAPPED:
        return True
    word = following.split()[0] if following.split() else ""
    return len(line.rstrip()) + 1 + len(word) <= (1 - EARLY_SLACK) * width


def read_text(path: Path) -> Document:
    """Text pasted from a PDF viewer, a word processor or a web page.

    Pasted text keeps little structure: lines hard-wrapped at some width (or one paragraph
    a line), blank lines between paragraphs, after every line or nowhere, page numbers and
    running headers between the lines, headings set apart only by being short. Paragraphs
    and headings are told from where lines end: a line that stops before the wrap width
    ends its paragraph; a short heading-like line standing alone is a heading.
    """
    text = _decode(path.read_bytes())
    raw_lines = [
        line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    pages, numbered = _text_pages(_undouble(raw_lines))

    def furniture(line: str) -> bool:
        key = furniture_key(line)
        return line == PAGE_MARK or key in numbered or key in running

    # Running headers and footers: lines that recur word for word at the top or bottom of
    # pages and nowhere else, or among the first two lines of two pages or more (a short
    # report has few pages), lines opening a page that restate the title, and the lines
    # beside such furniture on two pages.
    edges = []
    tops = []
    for page in pages:
        body = [x for x in page if x.strip() and x != PAGE_MARK]
        edges.append(body[:2] + body[-2:])
        tops.append([x for x in body[:2] if not _starts_item(x)])
    width = _wrap_width([x for page in pages for x in page if x.strip() and x != PAGE_MARK])
    everywhere = _line_counts(pages)
    running = _recurring(edges, everywhere, share=0.3, minimum=3) if len(pages) > 2 else set()
    running |= _recurring(tops, everywhere, share=0.0, minimum=2)
    running -= {""}
    running |= _title_headers(pages, width)
    running |= _furniture_neighbours(pages, running | numbered, everywhere)
    lines: list[_TextLine] = []
    blank = broken = False
    for number, page in enumerate(pages, start=1):
        if number > 1:
            broken = True
        for raw_line in page:
            stripped = raw_line.strip()
            if not stripped:
                blank = True
                continue
            if furniture(stripped):
                broken = True
                continue
            if _RULE.match(stripped):  # a Markdown underline: the line above is a heading
                if lines and not blank and not broken:
                    lines[-1].heading = True
                blank = True
                continue
            line = _TextLine(raw_line, number, blank, broken)
            blank = broken = False
            marker, rest = split_marker(stripped + " ")
            line.bare = (
                marker is not None
                and not rest.strip()
                and (
                    not lines
                    or line.blank_before
                    or _ends_sentence(lines[-1].text)
                    or _ends_early(lines[-1].text, stripped, width)
                )
            )
            lines.append(line)
    lines = _join_bare_markers(_drop_interruptions(lines, width))
    return Document(
        path,
        "txt",
        _pasted_tables(lines_to_blocks(_text_lines(lines, width))),
        pages=len([p for p in pages if any(x.strip() for x in p)]),
    )


def _drop_interruptions(lines: list[_TextLine], width: float) -> list[_TextLine]:
    """Drop page headers that split a sentence: lines after a page break, between a line
    that leaves a sentence open and the line that carries the sentence on.

    The open line is a full line that stops mid-sentence, or an item's number alone. The
    sentence goes on in a line starting in lower case, or, after a number alone or a line
    ending on a word no sentence ends on ("... for seven months, the"), in the first full
    line or the first that ends a sentence. Each dropped line stops short of the next and
    ends no sentence: text wrapped into the next line ("NHS England's guidance ...
    already" / "requires.") is kept.
    """
    out: list[_TextLine] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        prev = out[-1] if out else None
        if (
            line.break_before
            and prev is not None
            and (prev.bare or not _ends_sentence(prev.text))
            and (prev.bare or not _ends_early(prev.text, line.text.strip(), width))
        ):
            open_ended = prev.bare or _open_ended(prev.text)
            for j in range(i, min(i + 3, len(lines) - 1)):
                head = lines[j].text.strip()
                later = lines[j + 1]
                if (
                    head[:1].islower()
                    or _starts_item(head)
                    or _ends_sentence(head)
                    or not _ends_early(head, later.text.strip(), width)
                ):
                    break
                following = lines[j + 2].text if j + 2 < len(lines) else ""
                carries_on = later.text.strip()[:1].islower() or (
                    open_ended
                    and not _starts_item(later.text)
                    and (
                        _ends_sentence(later.text) or not _ends_early(later.text, following, width)
                    )
                )
                if carries_on:
                    later.break_before = True
                    later.page = line.page
                    i = j + 1
                    break
            line = lines[i]
        out.append(line)
        i += 1
    return out


def _join_bare_markers(lines: list[_TextLine]) -> list[_TextLine]:
    """Join an item's number alone on its line ("Recommendation 4") to the text below it."""
    out: list[_TextLine] = []
    for line in lines:
        prev = out[-1] if out else None
        if prev is not None and prev.bare and not line.bare:
            indent = line.text[: len(line.text) - len(line.text.lstrip())]
            out[-1] = _TextLine(
                indent + prev.text.strip() + " " + line.text.strip(),
                prev.page,
                prev.blank_before,
                prev.break_before,
            )
        elif prev is not None and prev.bare and line.bare:
            continue  # two numbers alone: keep the first
        else:
            out.append(line)
    return out


def _text_lines(lines: list[_TextLine], width: float) -> list[Line]:
    """Paragraph breaks, page breaks, headings and pasted tables of the content lines."""
    out: list[Line] = []
    in_table = False
    columns: set[str] = set()  # the column names of the pasted table being read
    previous_heading = False
    for i, line in enumerate(lines):
        stripped = line.text.strip()
        prev = lines[i - 1].text if i else ""
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        cells = [c for c in _CELLS.split(stripped) if c]
        if (
            len(cells) >= 3
            and any("recommendation" in c.lower() for c in cells)
            and all(len(c) < 40 for c in cells)
        ):
            out.append(Line("\x00theader\x00" + "\x00".join(cells), line.page, heading=False))
            in_table, previous_heading = True, False
            columns = {c.lower().strip(" .:") for c in cells}
            continue
        if in_table and len(cells) >= 3 and "\t" in stripped:
            out.append(Line("\x00trow\x00" + "\x00".join(cells), line.page, heading=False))
            continue
        label = re.match(r"([A-Za-z][\w ]{0,30}):\s", stripped)
        if in_table and label and label.group(1).lower() in columns:
            out.append(Line(stripped, line.page, heading=False))  # "Timescale: ..." of a row
            previous_heading = False
            continue
        # The author's paragraph breaks: blank lines, or the line before stopping short at
        # the end of a sentence. Across a page break only the second is evidence.
        ended = i > 0 and _ends_sentence(prev) and _ends_early(prev, stripped, width)
        gap = (
            (line.blank_before and not line.break_before)
            or ended
            or previous_heading
            or (in_table and bool(_ROW_START.match(stripped)))
        )
        heading = line.heading
        if _MARKDOWN_HEADING.match(stripped):
            stripped, heading = _MARKDOWN_HEADING.sub("", stripped), True
        elif heading is None and stripped.isupper() and len(stripped) < 80:
            # in capitals, unless it ends a sentence another line began ("... to the MASH.")
            heading = len(re.findall(r"[A-Z]", stripped)) >= 3 and (
                stripped[-1] not in ".;," or i == 0 or gap or _ends_sentence(prev)
            )
        elif heading is None:
            # Without a blank line above, a heading follows a line that stopped short, or
            # the end of a sentence when it names a section, a numbered one or an agency.
            alone_before = (
                i == 0
                or gap
                or _ends_early(prev, stripped, width)
                or (_ends_sentence(prev) and (line.break_before or _names_section(stripped)))
            )
            alone_after = (
                nxt is None
                or (nxt.blank_before and not nxt.break_before)
                or nxt.heading is True
                or _ends_early(line.text, nxt.text, width)
            )
            marker, _ = split_marker(stripped)
            heading = (
                alone_before
                and alone_after
                and bool(re.match(r"[A-Z0-9]", stripped))
                and bool(re.search(r"[A-Za-z]{2}", stripped))
                and not re.search(r"[\w)][.?!]\s", split_marker(stripped)[1])  # two sentences
                and (marker is None or marker[:1].isdigit())
                and looks_like_heading(stripped)
            )
        if heading:
            in_table = False
        # A letter and a full stop opening a line that carries on a sentence the full line
        # before left open is an initial ("... with" / "K. School staff"), not an item.
        initial = (
            i > 0
            and not gap
            and not heading
            and bool(_INITIAL.match(stripped))
            and not _ends_sentence(prev)
            and not _ends_early(prev, stripped, width)
        )
        out.append(
            Line(
                stripped,
                line.page,
                gap_before=bool(gap or heading),
                after_break=line.break_before and (i == 0 or _ends_early(prev, stripped, width)),
                heading=bool(heading),
                continues=initial,
            )
        )
        previous_heading = bool(heading)
    return out


def _pasted_tables(blocks: list[Block]) -> list[Block]:
    """Rows of a table pasted as text: "3 Health: The trust should ... Timescale: 6 months".

    Copying a table out of a PDF viewer flattens each row into one run of text that starts
    with its number (or a dash where the row has none); the agency is the labelled lead
    before a colon and the timescale the labelled tail, where present. A row's text may
    be broken by its own list ("... should: (a) ...; (b) ..." with "(d)" opening a line).
    Rows copied from a word processor or spreadsheet keep their cells apart with tabs.
    """
    out: list[Block] = []
    in_table = False
    flat = ""  # the text of the latest flattened row, while more of it may follow
    for block in blocks:
        if block.text.startswith(("\x00theader", "\x00trow")):
            cells = block.text.split("\x00")[2:]
            out.append(Block(ROW, " | ".join(cells), block.page, cells=cells))
            in_table, flat = True, ""
            continue
        m = _PASTED_ROW.match(block.text) if in_table and block.kind == PARA else None
        if m is None and flat and block.kind == PARA and _continues_row(flat, block.text):
            flat = f"{flat} {block.text}"
            out[-1] = _flat_row(flat, out[-1].page)
            continue
        if m is None:
            in_table, flat = False, ""
            out.append(block)
            continue
        flat = block.text
        out.append(_flat_row(flat, block.page))
    return out


def _continues_row(row: str, text: str) -> bool:
    if text[:1].islower():
        return True
    marker, _ = split_marker(text)
    return marker is not None and continues_inline_list(row, marker)


def _flat_row(text: str, page: int | None) -> Block:
    m = _PASTED_ROW.match(text)
    number, rest = (m.group(1), m.group(2)) if m else ("", text)
    timescale = ""
    t = re.match(r"^(.*)\s\bTimescale:\s*(.+)$", rest)  # the last label: the text may hold one
    if t:
        rest, timescale = t.group(1), t.group(2)
    agency = ""
    a = re.match(r"^([^:.]{2,60}):\s+(.*)$", rest)
    if a:
        agency, rest = a.group(1), a.group(2)
    cells = [number, agency, rest, timescale]
    return Block(ROW, " | ".join(cells), page, cells=cells)


# ----------------------------------------------------------------------------------- DOCX


_FORMATS: dict[str, Callable[[int], str]] = {
    "decimal": lambda n: str(n),
    "lowerLetter": lambda n: "abcdefghijklmnopqrstuvwxyz"[(n - 1) % 26],
    "upperLetter": lambda n: "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(n - 1) % 26],
    "lowerRoman": lambda n: _roman(n).lower(),
    "upperRoman": lambda n: _roman(n),
}


def _roman(n: int) -> str:
    out = ""
    for value, numeral in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += numeral
            n -= value
    return out


class _Numbering:
    """Word's automatic list numbers, computed as Word shows them."""

    def __init__(self, document):
        self.levels: dict[tuple[str, int], tuple[str, str, int]] = {}
        self.counters: dict[str, list[int]] = {}
        try:
            part = document.part.numbering_part
        except (NotImplementedError, KeyError):
            return
        root = part.element
        ns = {"w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main"}
        w = "{" + ns["w"] + "}"
        abstract = {}
        for a in root.findall("w:abstractNum", ns):
            levels = {}
            for lvl in a.findall("w:lvl", ns):
                ilvl = int(lvl.get(w + "ilvl"))
                fmt = lvl.find("w:numFmt", ns)
                txt = lvl.find("w:lvlText", ns)
                start = lvl.find("w:start", ns)
                levels[ilvl] = (
                    fmt.get(w + "val") if fmt is not None else "decimal",
                    txt.get(w + "val") if txt is not None else "%1.",
                    int(start.get(w + "val")) if start is not None else 1,
                )
            abstract[a.get(w + "abstractNumId")] = levels
        for num in root.findall("w:num", ns):
            ref = num.find("w:abstractNumId", ns)
            if ref is None:
                continue
            for ilvl, spec in abstract.get(ref.get(w + "val"), {}).items():
                self.levels[(num.get(w + "numId"), ilvl)] = spec

    def marker(self, num_id: str, ilvl: int) -> str | None:
        spec = self.levels.get((num_id, ilvl))
        if spec is None:
            return None
        fmt, template, _ = spec
        if fmt == "bullet":
            return "•"
        counts = self.counters.setdefault(num_id, [0] * 9)
        counts[ilvl] += 1
        for deeper in range(ilvl + 1, 9):
            counts[deeper] = 0
        text = template
        for level in range(ilvl + 1):
            lf, _, start = self.levels.get((num_id, level), ("decimal", "", 1))
            value = counts[level] + start - 1 if counts[level] else start
            text = text.replace(f"%{level + 1}", _FORMATS.get(lf, str)(value))
        return text.strip() or None


def _num_pr(paragraph):
    ppr = paragraph._p.pPr
    if ppr is not None and ppr.numPr is not None and ppr.numPr.numId is not None:
        return ppr.numPr
    style = paragraph.style
    while style is not None:
        sppr = style.element.pPr
        if sppr is not None and sppr.numPr is not None and sppr.numPr.numId is not None:
            return sppr.numPr
        style = style.base_style
    return None


def read_docx(path: Path) -> Document:
    _need("docx", "python-docx")
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as err:
        raise DocumentError(
            path,
            f"the Word file is damaged or not a .docx file "
            f"({type(err).__name__}); open it in Word and save it "
            f"again",
        ) from None
    numbering = _Numbering(document)
    blocks: list[Block] = []
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            p = Paragraph(child, document)
            text = normalise_space(p.text)
            if not text:
                continue
            style = (p.style.name if p.style is not None else "") or ""
            level = re.match(r"Heading (\d)", style)
            if style == "Title" or level:
                blocks.append(Block(HEADING, text, level=int(level.group(1)) if level else 0))
                continue
            num = _num_pr(p)
            if num is not None:
                ilvl = int(num.ilvl.val) if num.ilvl is not None else 0
                marker = numbering.marker(str(num.numId.val), ilvl)
                blocks.append(Block(ITEM, text, marker=marker, level=ilvl))
                continue
            bold = all(r.bold for r in p.runs if r.text.strip()) and p.runs
            kind = HEADING if bold and looks_like_heading(text) else PARA
            blocks.append(Block(kind, text))
        elif tag == "tbl":
            for row in Table(child, document).rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = normalise_space(cell.text)
                    if not cells or cells[-1] != value or value == "":  # merged cells repeat
                        cells.append(value)
                blocks.append(Block(ROW, " | ".join(cells), cells=cells))
    return Document(path, "docx", blocks)


# ----------------------------------------------------------------------------------- HTML


def _attr(tag: Tag, name: str) -> str:
    """An HTML attribute as text: "" when absent, multi-valued ones (class) joined by spaces."""
    value = tag.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return " ".join(str(v) for v in value)


NOT_CONTENT = re.compile(
    r"cookie|consent|banner|breadcrumb|skip|share|social|menu|navbar|"
    r"site-header|site-footer|newsletter|feedback",
    re.IGNORECASE,
)


def read_html(path: Path) -> Document:
    _need("bs4", "beautifulsoup4")
    _need("lxml", "lxml")
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(path.read_bytes(), "lxml")
    for tag in soup(
        [
            "script",
            "style",
            "noscript",
            "nav",
            "header",
            "footer",
            "aside",
            "form",
            "button",
            "template",
            "svg",
            "iframe",
        ]
    ):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        label = " ".join([_attr(tag, "id"), _attr(tag, "class"), _attr(tag, "role")])
        if (
            label.strip()
            and NOT_CONTENT.search(label)
            and tag.name not in ("html", "body", "main", "article")
        ):
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    blocks: list[Block] = []
    block_tags = {
        "p",
        "div",
        "section",
        "li",
        "table",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "dl",
        "dt",
        "dd",
        "pre",
        "article",
        "main",
    }

    def own_text(tag: Tag) -> str:
        parts = []
        for child in tag.children:
            if isinstance(child, NavigableString):
                parts.append(str(child))
            elif isinstance(child, Tag) and child.name not in block_tags:
                parts.append(child.get_text(" "))
            elif isinstance(child, Tag) and child.name == "br":
                parts.append(" ")
        return normalise_space(" ".join(parts))

    def walk(tag: Tag, level: int) -> None:
        for child in tag.children:
            if not isinstance(child, Tag):
                if (
                    isinstance(child, NavigableString)
                    and child.strip()
                    and tag.name in ("div", "section", "article", "main", "body")
                ):
                    blocks.append(Block(PARA, normalise_space(str(child))))
                continue
            name = child.name
            if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
                text = normalise_space(child.get_text(" "))
                if text:
                    blocks.append(Block(HEADING, text, level=int(name[1])))
            elif name in ("ol", "ul"):
                kind = _attr(child, "type") or "1"
                start_attr = _attr(child, "start")
                start = int(start_attr) if start_attr.isdigit() else 1
                n = start
                for li in child.find_all("li", recursive=False):
                    if name == "ul":
                        marker = "•"
                    else:
                        styles: dict[str, Callable[[int], str]] = {
                            "a": _FORMATS["lowerLetter"],
                            "A": _FORMATS["upperLetter"],
                            "i": _FORMATS["lowerRoman"],
                            "I": _roman,
                        }
                        marker = styles.get(kind, _FORMATS["decimal"])(n) + "."
                        n += 1
                    text = own_text(li)
                    if text:
                        blocks.append(Block(ITEM, text, marker=marker, level=level))
                    walk(li, level + 1)
            elif name == "table":
                for tr in child.find_all("tr"):
                    cells = [normalise_space(td.get_text(" ")) for td in tr.find_all(["td", "th"])]
                    if any(cells):
                        blocks.append(Block(ROW, " | ".join(cells), cells=cells))
            elif name in ("p", "dt", "dd", "blockquote", "pre"):
                text = normalise_space(child.get_text(" "))
                if text:
                    strong = child.find(["strong", "b"])
                    whole_bold = (
                        strong is not None and normalise_space(strong.get_text(" ")) == text
                    )
                    kind = HEADING if whole_bold and looks_like_heading(text) else PARA
                    blocks.append(Block(kind, text))
            elif name in block_tags:
                text = own_text(child)
                if text and name not in ("li",):
                    blocks.append(Block(PARA, text))
                walk(child, level)

    walk(root, 0)
    return Document(path, "html", blocks)


__all__ = [
    "Document",
    "DocumentError",
    "HEADING",
    "ITEM",
    "PARA",
    "ROW",
    "read_document",
    "document_format",
]
