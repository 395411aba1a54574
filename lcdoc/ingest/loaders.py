"""Turn bytes of PDF (scanned pages by OCR), text, Markdown, reStructuredText, HTML, or an office
container (docx, pptx, odt, odp, ods, epub: lcdoc.ingest.office) into a Document, or say why not."""

from __future__ import annotations

import gzip
import hashlib
import zlib
import io
import re
import sys
from pathlib import Path

from lcdoc.errors import InputFileError
from lcdoc.ingest.document import Document
from lcdoc.ingest.text import decode_text, html_to_text  # noqa: F401  (imported from here too)

KINDS = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
SNIFF_BYTES = 8192
# The most a compressed file may inflate to (the default file size limit, counted on what comes
# out, not on what goes in): a gzip bomb is refused at this size, never held whole.
MAX_DECOMPRESSED = 200 * 2**20


def kind_for(name: str) -> str:
    """Document kind from a file name (inner name for .gz files)."""
    name = name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return KINDS.get(Path(name).suffix, "text")


def looks_binary(head: bytes) -> bool:
    """NUL bytes in the first block mean a binary file (UTF-16 text announces itself with a BOM)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    return b"\x00" in head[:SNIFF_BYTES]


def _pdf_reader(data: bytes, name: str):
    """An opened (and, for an empty user password, decrypted) pypdf reader, or InputFileError."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns on every odd xref
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # many PDFs are encrypted with an empty user password
            except Exception as e:  # missing crypto backend, unknown algorithm
                raise InputFileError(name, f"encrypted PDF that cannot be opened ({e})") from e
            if not ok:
                raise InputFileError(name, "encrypted PDF (a password is needed)")
        len(reader.pages)  # walks the page tree: a broken one fails here, not half-way
        return reader
    except InputFileError:
        raise
    except _PDF_ERRORS + (PdfReadError,) as e:
        raise InputFileError(name, f"not a readable PDF ({type(e).__name__}: {e})") from e


_PDF_ERRORS = (ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError,
               IndexError, AssertionError)


def _pdf_pages(data: bytes, name: str, lo: int = 0, hi: int | None = None) -> list[str]:
    """Text of pages lo..hi-1 (all by default); a page that fails to extract is empty, not fatal,
    unless no page gave text: then the first page's failure is the file's reason."""
    reader = _pdf_reader(data, name)
    pages: list[str] = []
    errors: list[str] = []
    try:
        chosen = reader.pages[lo:hi]
    except _PDF_ERRORS as e:
        raise InputFileError(name, f"not a readable PDF ({type(e).__name__}: {e})") from e
    for page in chosen:
        try:
            pages.append(page.extract_text() or "")
        except Exception as e:  # one bad page must not lose the rest of the document
            pages.append("")
            errors.append(_page_error(e))
    if errors and not any(p.strip() for p in pages):
        raise InputFileError(name, f"text could not be extracted from {len(errors)} of "
                                   f"{len(pages)} page(s): {errors[0]}")
    return pages


def _page_error(e: Exception) -> str:
    """Why a page gave no text, in words: pypdf's decompression limit is the common one."""
    if type(e).__name__ == "LimitReachedError":
        return f"a content stream decompresses past pypdf's safety limit ({e})"
    return f"{type(e).__name__}: {e}"


def _gunzip(data: bytes, name: str, limit: int | None = None) -> bytes:
    """The bytes inside a .gz file (Debian ships its manuals gzipped); other bytes unchanged.
    Decompressed in a stream and stopped at `limit` bytes, so a gzip bomb costs that much at most."""
    if not (name.lower().endswith(".gz") or data[:2] == b"\x1f\x8b"):
        return data
    limit = MAX_DECOMPRESSED if limit is None else limit
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise InputFileError(name, f"corrupt gzip data ({e})") from e
    if len(out) > limit:
        raise InputFileError(name, f"decompresses to more than the {limit // 2**20} MiB limit "
                                   f"({len(data):,} bytes compressed)")
    return out


OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc, .ppt, .xls before 2007


def is_pdf(data: bytes) -> bool:
    """A PDF by its header, which readers accept within the first 1024 bytes."""
    return b"%PDF-" in data[:1024]


def fill_scanned(data: bytes, name: str, sha256: str, pages: list[str], lo: int = 0) -> list[str]:
    """Scanned pages (images without a text layer) read by OCR (lcdoc.ingest.ocr)."""
    from lcdoc.ingest.ocr import fill_scanned as ocr_fill

    return ocr_fill(data, name, sha256, pages, lo)


def _check_pdf(data: bytes, name: str) -> bytes:
    if not is_pdf(data):
        raise InputFileError(name, "not a PDF (no %PDF- header)")
    return data[data.index(b"%PDF-"):]


def _pdf_bytes(path: str | Path) -> bytes:
    return _check_pdf(_gunzip(_read(path), str(path)), str(path))


def pdf_page_count(path: str | Path) -> int:
    """Pages in a PDF on disk, so one large PDF can be extracted by several processes."""
    return len(_pdf_reader(_pdf_bytes(path), str(path)).pages)


def pdf_page_range(path: str | Path, lo: int, hi: int, sha256: str = "") -> list[str]:
    """Text of pages lo..hi-1 of a PDF on disk (top-level so a process pool can run it), its
    scanned pages read by OCR."""
    data = _pdf_bytes(path)
    return fill_scanned(data, str(path), sha256 or hashlib.sha256(data).hexdigest(),
                        _pdf_pages(data, str(path), lo, hi), lo)


def pdf_document(name: str, sha256: str, pages: list[str],
                 outline: list[tuple[int, int, str]] = ()) -> Document:
    """A PDF Document from its pages' text, page starts kept for citations; outline entries
    (page index, level, title) become headings placed where their title starts on the page."""
    pages = [_clean(p) for p in pages]
    starts, pos = [], 0
    for p in pages:
        starts.append(pos)
        pos += len(p) + 2  # the "\n\n" that joins pages
    text = "\n\n".join(pages)
    if not text.strip():
        raise InputFileError(name, f"no extractable text in {len(pages)} page(s) (scanned images?)")
    heads = []
    for page, level, title in outline:
        if 0 <= page < len(pages) and title.strip():
            at = _find_title(pages[page], title)
            heads.append((starts[page] + at, level, " ".join(title.split())))
    return Document(name, text, "pdf", sha256, tuple(starts), tuple(sorted(set(heads))))


def _find_title(page: str, title: str) -> int:
    """Where a bookmark's title begins on its page (spaces and case aside), else the page top."""
    words = title.split()
    if not words:
        return 0
    pattern = r"\s+".join(re.escape(w) for w in words[:8])
    m = re.search(pattern, page, re.I)
    if not m:
        return 0
    line_start = page.rfind("\n", 0, m.start()) + 1  # a numbered title: "1.7 Using R"
    return line_start if m.start() - line_start <= 12 else m.start()


def pdf_outline(reader) -> list[tuple[int, int, str]]:
    """(page index, level, title) of every bookmark; [] when the PDF has none or a broken one."""
    out: list[tuple[int, int, str]] = []

    def walk(items, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                out.append((reader.get_destination_page_number(item), level, str(item.title)))
            except Exception:  # a bookmark to nowhere: skip it, keep the others
                continue

    try:
        walk(reader.outline, 1)
    except Exception:
        return []
    return out


def pdf_outline_of(path: str | Path) -> list[tuple[int, int, str]]:
    """The outline of a PDF on disk (for documents extracted in page ranges)."""
    try:
        return pdf_outline(_pdf_reader(_pdf_bytes(path), str(path)))
    except Exception:
        return []


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.strip("\n")


def load_bytes(data: bytes, name: str, kind: str | None = None) -> Document:
    """Document from raw bytes; `name` is what errors and citations call it.

    The boundary of one file: whatever reading, decompressing, extracting or decoding it throws
    comes out as an InputFileError naming it, so one bad file never stops the others.
    """
    try:
        return _load_bytes(data, name, kind)
    except InputFileError:
        raise
    except Exception as e:  # a parser's own failure on a malformed file
        raise InputFileError(name, f"could not be read ({type(e).__name__}: {e})") from e


def _load_bytes(data: bytes, name: str, kind: str | None) -> Document:
    """By content first (a PDF, a zip container, an old Office file), then by name."""
    from lcdoc.ingest.archive import ZIP_MAGIC

    sha = hashlib.sha256(data).hexdigest()
    data = _gunzip(data, name)
    kind = kind or kind_for(name)
    if is_pdf(data):
        kind = "pdf"
    if not data.strip():
        raise InputFileError(name, "empty file")
    if kind == "pdf":
        data = _check_pdf(data, name)
        pages = fill_scanned(data, name, sha, _pdf_pages(data, name))
        return pdf_document(name, sha, pages, pdf_outline(_pdf_reader(data, name)))
    if data[:4] == ZIP_MAGIC:
        from lcdoc.ingest.office import load_container

        return load_container(data, name, sha)
    if data[:8] == OLE2_MAGIC:
        raise InputFileError(name, "an old binary Office file (.doc, .ppt, .xls): save it as "
                                   ".docx, .pptx or .odt to read it")
    if looks_binary(data):
        raise InputFileError(name, "binary file, not text")
    text = _clean(decode_text(data))
    if kind == "html":
        text = html_to_text(text)
    if not text.strip():
        raise InputFileError(name, "no text")
    return Document(name, text, kind, sha)


def load_path(path: str | Path) -> Document:
    """Document from a file on disk (top-level so a process pool can run it)."""
    return load_bytes(_read(path), str(path))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise InputFileError(str(path), "no such file") from e
    except IsADirectoryError as e:
        raise InputFileError(str(path), "is a directory") from e
    except OSError as e:
        raise InputFileError(str(path), f"cannot read ({e.strerror})") from e


def load_stdin(name: str = "<stdin>") -> Document:
    """Document from standard input ('-' on the command line)."""
    data = sys.stdin.buffer.read()
    return load_bytes(data, name)
