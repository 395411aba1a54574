"""Word (.docx), PowerPoint (.pptx), OpenDocument (.odt, .odp, .ods) and EPUB documents as text
with their own structure: heading styles, slide titles, sheet names and chapters become the
outline the chunker cuts at and citations name; a slide is a page.

Each container is opened within lcdoc.ingest.archive's bounds before a library reads it.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from typing import Iterator
from urllib.parse import unquote
from xml.etree import ElementTree

from lcdoc.errors import InputFileError
from lcdoc.ingest.archive import check_xml, container_format, open_archive, read_member
from lcdoc.ingest.document import Document
from lcdoc.ingest.text import decode_text, html_to_text

KINDS = ("docx", "pptx", "odt", "odp", "ods", "epub")


class _Text:
    """Blocks of text joined by blank lines, with headings and page starts at their offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.outline: list[tuple[int, int, str]] = []
        self.pages: list[int] = []

    def add(self, text: str) -> None:
        text = text.strip()
        if text:
            if self.parts:
                self.size += 2
            self.parts.append(text)
            self.size += len(text)

    def heading(self, title: str, level: int) -> None:
        title = " ".join(title.split())
        if title:
            self.outline.append((self.size + (2 if self.parts else 0), max(1, level), title))
            self.add(title)

    def page(self) -> None:
        self.pages.append(self.size + (2 if self.parts else 0))

    def document(self, name: str, kind: str, sha256: str) -> Document:
        text = "\n\n".join(self.parts)
        if not text.strip():
            raise InputFileError(name, f"no text in this {kind} document")
        pages = tuple(min(p, len(text)) for p in self.pages) if len(self.pages) > 1 else ()
        return Document(name, text, kind, sha256, pages, tuple(self.outline))


def load_container(data: bytes, name: str, sha256: str) -> Document:
    """A document from a zip container, its format told by its members (not its name)."""
    z = open_archive(data, name)
    kind = container_format(z)
    if kind is None:
        raise InputFileError(name, "a zip archive that is not a document (docx, pptx, odt, "
                                   "odp, ods, epub)")
    check_xml(z, name)
    out = _Text()
    if kind == "docx":
        _docx(data, out)
    elif kind == "pptx":
        _pptx(data, out)
    elif kind == "epub":
        _epub(z, name, out)
    else:
        _odf(data, out)
    return out.document(name, kind, sha256)


# --- Word ------------------------------------------------------------------------------------
_HEADING_STYLE = re.compile(r"(?:heading|überschrift|titre|título|titolo)\s*(\d)", re.I)


def _docx(data: bytes, out: _Text) -> None:
    """Paragraphs and tables in body order; "Title" and "Heading N" styles are headings.
    Footnotes, comments, headers and footers are left out (not body text)."""
    import docx
    from docx.table import Table

    d = docx.Document(io.BytesIO(data))
    for block in d.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                out.add(_row([c.text for c in row.cells]))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        m = _HEADING_STYLE.search(style)
        if style.lower() == "title" or m:
            out.heading(block.text, int(m.group(1)) if m else 1)
        else:
            out.add(block.text)


def _row(cells: list[str]) -> str:
    """A table row as one line, cells joined by " | " (a merged cell once, not repeated)."""
    kept: list[str] = []
    for c in cells:
        c = " ".join(c.split())
        if not kept or c != kept[-1]:
            kept.append(c)
    return " | ".join(kept) if any(kept) else ""


# --- PowerPoint ------------------------------------------------------------------------------
def _pptx(data: bytes, out: _Text) -> None:
    """A slide a page: its title a heading, then the text of its shapes and tables in order
    (speaker notes left out)."""
    from pptx import Presentation

    for n, slide in enumerate(Presentation(io.BytesIO(data)).slides, 1):
        out.page()
        title = slide.shapes.title
        out.heading(title.text_frame.text if title is not None and title.has_text_frame
                    else f"Slide {n}", 1)
        for shape in slide.shapes:
            if title is not None and shape.shape_id == title.shape_id:
                continue
            for text in _shape_text(shape):
                out.add(text)


def _shape_text(shape) -> Iterator[str]:
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        yield "\n".join(p.text for p in shape.text_frame.paragraphs if p.text.strip())
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            yield _row([c.text for c in row.cells])
    for child in getattr(shape, "shapes", ()):  # a group
        yield from _shape_text(child)


# --- OpenDocument ----------------------------------------------------------------------------
def _odf(data: bytes, out: _Text) -> None:
    """Text documents: headings at their outline level, paragraphs, lists and tables;
    presentations: a slide a page, titled by its title frame; spreadsheets: a sheet a section."""
    from odfdo import Document as OdfDocument

    body = OdfDocument(io.BytesIO(data)).body
    _odf_walk(body, out)


def _odf_walk(el, out: _Text) -> None:
    for child in el.children:
        tag = child.tag
        if tag == "text:h":
            level = child.get_attribute_string("text:outline-level") or "1"
            out.heading(child.text_recursive, int(level) if level.isdigit() else 1)
        elif tag == "text:p" and child.get_attribute_string("text:style-name") == "Title":
            out.heading(child.text_recursive, 1)
        elif tag == "text:p":
            out.add(child.text_recursive)
        elif tag == "table:table":
            sheet = child.get_attribute_string("table:name")
            if el.tag == "office:spreadsheet" and sheet:
                out.heading(sheet, 1)
            for row in child.xpath(".//table:table-row"):
                out.add(_row([c.text_recursive for c in row.xpath("table:table-cell")]))
        elif tag == "draw:page":
            out.page()
            title = [f for f in child.children if _is_title(f)]
            out.heading(title[0].text_recursive if title else
                        child.get_attribute_string("draw:name") or "", 1)
            _odf_walk(child, out)
        elif _is_title(child) or tag in _ODF_LEFT_OUT:
            continue
        else:
            _odf_walk(child, out)


# Not body text: forms, declarations, comments, speaker notes.
_ODF_LEFT_OUT = ("office:forms", "text:sequence-decls", "table:named-expressions",
                 "office:annotation", "presentation:notes")


def _is_title(el) -> bool:
    """A slide's title frame (taken as the slide's heading, not again as its text)."""
    return el.tag == "draw:frame" and el.get_attribute_string("presentation:class") == "title"


# --- EPUB ------------------------------------------------------------------------------------
_CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF_NS = "{http://www.idpf.org/2007/opf}"


def _xml(z: zipfile.ZipFile, member: str, name: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(read_member(z, member, name))
    except ElementTree.ParseError as e:
        raise InputFileError(name, f"{member}: not well-formed XML ({e})") from e


def _epub(z: zipfile.ZipFile, name: str, out: _Text) -> None:
    """The spine's documents in reading order (an EPUB is a zip of XHTML), their headings kept;
    a chapter without a heading of its own is titled from the table of contents."""
    root = _xml(z, "META-INF/container.xml", name).find(f".//{_CONTAINER_NS}rootfile")
    if root is None or not root.get("full-path"):
        raise InputFileError(name, "EPUB without a package document (META-INF/container.xml)")
    opf_path = root.get("full-path")
    opf = _xml(z, opf_path, name)
    base = posixpath.dirname(opf_path)
    items = {i.get("id"): i for i in opf.iter(f"{_OPF_NS}item")}
    titles = _epub_toc(z, name, opf, items, base)
    for ref in opf.iter(f"{_OPF_NS}itemref"):
        item = items.get(ref.get("idref"))
        if item is None or "html" not in (item.get("media-type") or ""):
            continue
        href = posixpath.normpath(posixpath.join(base, unquote(item.get("href") or "")))
        text = html_to_text(decode_text(read_member(z, href, name)))
        lines = text.split("\n\n")
        own = lines[0].startswith("#") if lines else False
        if not own and titles.get(href):
            out.heading(titles[href], 1)
        for block in lines:
            m = re.match(r"(#{1,6}) (.+)", block)
            if m and "\n" not in block:
                out.heading(m.group(2), len(m.group(1)))
            else:
                out.add(block)


def _epub_toc(z: zipfile.ZipFile, name: str, opf, items: dict, base: str) -> dict[str, str]:
    """Chapter file -> its title in the table of contents (EPUB 3 nav, else EPUB 2 NCX)."""
    titles: dict[str, str] = {}
    for item in items.values():
        href = posixpath.normpath(posixpath.join(base, unquote(item.get("href") or "")))
        if "nav" in (item.get("properties") or "").split():
            html = decode_text(read_member(z, href, name))
            for target, label in re.findall(r'<a[^>]*href="([^"#]*)[^"]*"[^>]*>(.*?)</a>', html,
                                            re.S):
                key = posixpath.normpath(posixpath.join(posixpath.dirname(href), unquote(target)))
                titles.setdefault(key, re.sub(r"<[^>]+>|\s+", " ", label).strip())
        elif item.get("media-type") == "application/x-dtbncx+xml":
            ncx = _xml(z, href, name)
            for point in ncx.iter("{http://www.daisy.org/z3986/2005/ncx/}navPoint"):
                label = point.find(".//{http://www.daisy.org/z3986/2005/ncx/}text")
                src = point.find("{http://www.daisy.org/z3986/2005/ncx/}content")
                if label is not None and src is not None and src.get("src"):
                    key = posixpath.normpath(posixpath.join(
                        posixpath.dirname(href), unquote(src.get("src").split("#")[0])))
                    titles.setdefault(key, " ".join((label.text or "").split()))
    return titles
