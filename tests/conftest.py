"""Shared fixtures: real PDFs made with reportlab, real corpora on disk, the real packaged models."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nothing the tests run may land in the user's own data folder (the answer history that `lcdoc
# log` shows, the default index folder): a folder of the test session's instead. A test that
# names its own (XDG_DATA_HOME, LCDOC_HISTORY_DB) still wins.
if "LCDOC_TEST_SESSION" not in os.environ:  # once, though some tests import this as `conftest`
    os.environ["LCDOC_TEST_SESSION"] = tempfile.mkdtemp(prefix="lcdoc-test-")
    atexit.register(shutil.rmtree, os.environ["LCDOC_TEST_SESSION"], True)
_SESSION = Path(os.environ["LCDOC_TEST_SESSION"])
os.environ["XDG_DATA_HOME"] = str(_SESSION / "data")
# Likewise the cache (ONNX exports, speed book, calibration profiles, OCR text).
SESSION_CACHE = _SESSION / "cache"
os.environ["XDG_CACHE_HOME"] = str(SESSION_CACHE)


def fresh_cache(tmp_path: Path) -> Path:
    """A cache folder of the test's own that shares the session's ONNX export of the embedding
    model: exporting it again costs ~20 s on a 2-core machine and is tested on its own."""
    root = tmp_path / "cache"
    (root / "lcdoc").mkdir(parents=True, exist_ok=True)
    shared = SESSION_CACHE / "lcdoc" / "onnx"
    shared.mkdir(parents=True, exist_ok=True)
    link = root / "lcdoc" / "onnx"
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return root


LCDOC = [sys.executable, "-m", "lcdoc"]  # the console script as a user runs it


def run_lcdoc(args: list[str], env: dict | None = None, stdin: str | None = None,
              timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """One `lcdoc` command in a new process, text in and out: env is added to this process's
    environment; stdin is the text piped in (None: no stdin at all, as from cron)."""
    return subprocess.run(LCDOC + [str(a) for a in args], input=stdin, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                          **({} if stdin is not None else {"stdin": subprocess.DEVNULL}), **kw)


def make_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A real multi-page PDF whose text pypdf can extract, one string per page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for text in pages:
        y = 800
        if title:
            c.setFont("Helvetica-Bold", 14)
            c.drawString(50, y, title)
            y -= 30
        c.setFont("Helvetica", 10)
        for para in text.split("\n"):
            line = ""
            for word in para.split():
                if len(line) + len(word) > 95:
                    c.drawString(50, y, line)
                    y -= 13
                    line = ""
                line += word + " "
            c.drawString(50, y, line)
            y -= 20
            if y < 60:
                break
        c.showPage()
    c.save()
    return path


FILLER = [
    "The committee reviewed the quarterly accounts and found the figures consistent with the "
    "ledger. Travel costs rose because of the regional audits planned in the spring.",
    "Maintenance of the pumping station follows the schedule agreed with the county. Filters are "
    "replaced every six weeks and the logs are kept in the control room.",
    "Volunteers staffed the library on weekends. The reading programme for children doubled its "
    "attendance after the new shelves arrived from the carpentry workshop.",
    "The orchard produced fewer apples than expected after a late frost. Pears were unaffected and "
    "the cider press ran for three weeks in October.",
    "Road repairs on the northern bridge were postponed until the river level drops. A temporary "
    "footpath was opened along the old railway line.",
]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small real corpus: a PDF, Markdown, HTML, reStructuredText and text, each with a known fact."""
    root = tmp_path_factory.mktemp("corpus")
    pages = [" ".join(FILLER[(i + j) % 5] for j in range(3)) for i in range(6)]
    pages[3] = pages[3] + "\nThe emergency generator at the pumping station is tested on the first " \
        "Monday of every month by the duty engineer, Margit Olander."
    make_pdf(root / "report.pdf", pages, title="Annual report")
    (root / "guide.md").write_text(
        "# Field guide\n\nIntroduction to the field guide for the river survey.\n\n"
        "## Sampling\n\nWater samples are taken at dawn from the three marked buoys. " + FILLER[0] +
        "\n\n## Equipment\n\nThe turbidity meter must be calibrated with the grey reference bottle "
        "before every survey. " + FILLER[1] + "\n"
    )
    (root / "notes.html").write_text(
        "<html><head><title>Notes</title><style>p{color:red}</style></head><body>"
        "<h1>Meeting notes</h1><p>The harbour festival moves to the second weekend of August.</p>"
        f"<script>var x = 1;</script><p>{FILLER[2]}</p></body></html>"
    )
    (root / "policy.rst").write_text(
        "Leave policy\n============\n\nStaff accrue two days of leave per month.\n\n"
        "Carry-over\n----------\n\nUnused leave of up to ten days carries over to the next year. "
        + FILLER[3] + "\n"
    )
    (root / "plain.txt").write_bytes(
        ("The bakery on Quay Street opens at six. " + FILLER[4]).encode() + b" caf\xe9 \xff\xfe end\n"
    )
    return root


@pytest.fixture(scope="session")
def embedder():
    """The packaged MiniLM, loaded once for the session."""
    from lcdoc.index.embed import get_embedder

    return get_embedder()
