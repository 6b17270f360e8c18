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

import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from scrclf.errors import DataError

from .blocks import (
    HEADING,
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
)

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
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - pypdf raises several types for unknown ciphers
                opened = 0
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


def read_text(path: Path) -> Document:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    # Pages: form feeds, or a page number alone on its line closing a page.
    raw_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    pages: list[list[str]] = [[]]
    for line in raw_lines:
        parts = line.split("\f")
        for k, part in enumerate(parts):
            if k:
                pages.append([])
            pages[-1].append(part)
            if PAGE_NUMBER_RE.match(part):
                pages.append([])
    # Running headers and footers: lines that recur at the top or bottom of pages.
    edges = [
        [x for x in page if x.strip()][:2] + [x for x in page if x.strip()][-2:] for page in pages
    ]
    running = repeated_lines(edges, share=0.3, minimum=3) if len(pages) > 2 else set()
    lines: list[Line] = []
    blank = True
    in_table = False
    markdown_heading = re.compile(r"^#{1,6}\s+")
    for number, page in enumerate(pages, start=1):
        first = True
        for i, raw_line in enumerate(page):
            stripped = raw_line.strip()
            if PAGE_NUMBER_RE.match(stripped) or furniture_key(stripped) in running:
                if not stripped:
                    pass
                continue
            if not stripped:
                # A blank line that only precedes a page number is page furniture too.
                rest = [x for x in page[i + 1 :] if x.strip()]
                if rest and not all(PAGE_NUMBER_RE.match(x) for x in rest):
                    blank = True
                continue
            heading = None
            cells = re.split(r"\s{2,}|\t", stripped)
            if (
                len(cells) >= 3
                and any("recommendation" in c.lower() for c in cells)
                and all(len(c) < 40 for c in cells)
            ):
                lines.append(Line("\x00theader\x00" + "\x00".join(cells), number, heading=False))
                in_table, blank, first = True, False, False
                continue
            if in_table and re.match(r"^\d{1,3}\s+[A-Z]", stripped):
                blank = True  # a pasted table row starts with its number
            if markdown_heading.match(stripped):
                stripped = markdown_heading.sub("", stripped)
                heading = True
            elif stripped.isupper() and len(stripped) < 80:
                heading = True
            lines.append(
                Line(stripped, number, gap_before=blank, after_break=first, heading=heading)
            )
            blank = False
            first = False
    blocks = _pasted_tables(lines_to_blocks(lines))
    return Document(path, "txt", blocks, pages=len([p for p in pages if any(x.strip() for x in p)]))


def _pasted_tables(blocks: list[Block]) -> list[Block]:
    """Rows of a table pasted as text: "3 Health: The trust should ... Timescale: 6 months".

    Copying a table out of a PDF viewer flattens each row into one run of text that starts
    with its number; the agency is the labelled lead before a colon and the timescale the
    labelled tail, where present.
    """
    out: list[Block] = []
    in_table = False
    for block in blocks:
        if block.text.startswith("\x00theader"):
            cells = block.text.split("\x00")[2:]
            out.append(Block(ROW, " | ".join(cells), block.page, cells=cells))
            in_table = True
            continue
        m = (
            re.match(r"^(\d{1,3})\s+([A-Z].*)$", block.text)
            if in_table and block.kind == PARA
            else None
        )
        if m is None:
            in_table = in_table and block.kind == PARA and False
            out.append(block)
            continue
        rest = m.group(2)
        timescale = ""
        t = re.search(r"\s*\bTimescale:\s*(.+)$", rest)
        if t:
            timescale, rest = t.group(1), rest[: t.start()]
        agency = ""
        a = re.match(r"^([^:.]{2,60}):\s+(.*)$", rest)
        if a:
            agency, rest = a.group(1), a.group(2)
        cells = [m.group(1), agency, rest, timescale]
        out.append(Block(ROW, " | ".join(cells), block.page, cells=cells))
    return out


# ----------------------------------------------------------------------------------- DOCX


_FORMATS = {
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
                cells = []
                for cell in row.cells:
                    value = normalise_space(cell.text)
                    if not cells or cells[-1] != value or value == "":  # merged cells repeat
                        cells.append(value)
                blocks.append(Block(ROW, " | ".join(cells), cells=cells))
    return Document(path, "docx", blocks)


# ----------------------------------------------------------------------------------- HTML

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
        label = " ".join(
            [tag.get("id") or "", " ".join(tag.get("class") or []), tag.get("role") or ""]
        )
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
                kind = child.get("type") or "1"
                start = (
                    int(child.get("start") or 1) if str(child.get("start") or "1").isdigit() else 1
                )
                n = start
                for li in child.find_all("li", recursive=False):
                    if name == "ul":
                        marker = "•"
                    else:
                        marker = {
                            "a": _FORMATS["lowerLetter"],
                            "A": _FORMATS["upperLetter"],
                            "i": _FORMATS["lowerRoman"],
                            "I": _roman,
                        }.get(kind, str)(n) + "."
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
