"""Scanned PDF pages read with Tesseract OCR: only pages that have an image and no text layer,
in parallel, page numbers kept, and cached by the PDF's hash so a re-index does not OCR again.

Pages are rendered with PDFium (pypdfium2) one at a time (PDFium is not thread-safe) and each
image goes to its own `tesseract` process, as many at once as there are cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from lcdoc.errors import InputFileError

# A page with fewer characters than this in its text layer, and an image on it, is a scan.
MIN_TEXT_CHARS = 16
DPI = 300  # what Tesseract is trained for; lower resolutions lose small print
LANG_ENV = "LCDOC_OCR_LANG"  # Tesseract's language codes, e.g. "eng+deu" (default: eng)
HOW_TO = "install Tesseract to read it with OCR (Debian/Ubuntu: apt install tesseract-ocr)"


@lru_cache(maxsize=1)
def tesseract_version() -> str | None:
    """Tesseract's version, or None when it is not installed."""
    exe = shutil.which("tesseract")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split()[-1] if first else "unknown"


def cache_file(sha256: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc" / "ocr" / f"{sha256[:32]}.json"


def scanned_pages(data: bytes, pages: list[str], lo: int = 0) -> list[int]:
    """Indexes (into pages, which start at page lo of the PDF) of pages without a text layer
    that carry an image."""
    empty = [i for i, text in enumerate(pages) if len(text.strip()) < MIN_TEXT_CHARS]
    if not empty:
        return []
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as raw
    except ImportError:  # a minimal install: PDFs are read as before, without OCR
        return []
    pdf = pdfium.PdfDocument(data)
    try:
        return [i for i in empty if lo + i < len(pdf)
                and next(pdf[lo + i].get_objects(filter=(raw.FPDF_PAGEOBJ_IMAGE,)), None)]
    finally:
        pdf.close()


def fill_scanned(data: bytes, name: str, sha256: str, pages: list[str], lo: int = 0) -> list[str]:
    """The pages with each scanned one's text read by OCR (from the cache when it was read
    before). Without Tesseract, a PDF with no text at all is named with how to enable OCR;
    one with some text keeps it."""
    todo = scanned_pages(data, pages, lo)
    if not todo:
        return pages
    version = tesseract_version()
    if version is None:
        if not any(len(p.strip()) >= MIN_TEXT_CHARS for p in pages):
            raise InputFileError(name, f"a scanned PDF ({len(todo)} page(s) of images without a "
                                       f"text layer): {HOW_TO}")
        return pages
    lang = os.environ.get(LANG_ENV, "eng")
    cached = _read_cache(sha256, f"{version}/{lang}/{DPI}")
    need = [i for i in todo if str(lo + i) not in cached]
    if need:
        cached.update(_ocr(data, name, [lo + i for i in need], lang))
        _write_cache(sha256, f"{version}/{lang}/{DPI}", cached)
    out = list(pages)
    for i in todo:
        out[i] = cached.get(str(lo + i), "") or out[i]
    return out


def _ocr(data: bytes, name: str, page_numbers: list[int], lang: str) -> dict[str, str]:
    """page index -> its OCR text: rendered here one by one, recognised in parallel."""
    import pypdfium2 as pdfium

    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # one core each: the pool spreads the pages
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lcdoc-ocr-") as work, \
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        pdf = pdfium.PdfDocument(data)
        futures = {}
        try:
            for n in page_numbers:
                png = Path(work) / f"{n}.png"
                pdf[n].render(scale=DPI / 72).to_pil().save(png)
                futures[n] = pool.submit(_tesseract, png, lang, env)
        finally:
            pdf.close()
        for n, fut in futures.items():
            text, problem = fut.result()
            if problem:
                raise InputFileError(name, f"OCR of page {n + 1} failed ({problem})")
            results[str(n)] = text
    return results


def _tesseract(png: Path, lang: str, env: dict) -> tuple[str, str | None]:
    try:
        r = subprocess.run(["tesseract", str(png), "stdout", "-l", lang], capture_output=True,
                           text=True, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "", str(e)
    if r.returncode != 0:
        return "", (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return r.stdout, None


def _read_cache(sha256: str, key: str) -> dict[str, str]:
    try:
        d = json.loads(cache_file(sha256).read_text())
        return d["pages"] if d.get("key") == key else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_cache(sha256: str, key: str, pages: dict[str, str]) -> None:
    """OCR text is document text: 0600 in 0700 folders (lcdoc.private); a cache that cannot be
    written costs a second OCR next time, nothing more."""
    from lcdoc.private import private_dir, write_private

    path = cache_file(sha256)
    try:
        private_dir(path.parent)
        write_private(path, json.dumps({"key": key, "pages": pages}))
    except OSError:
        pass
