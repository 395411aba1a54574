"""Word, PowerPoint, OpenDocument, EPUB and scanned PDFs (issue 24): each read with its own
structure, found by content, and every hostile archive refused within bounds."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcdoc.errors import InputFileError
from lcdoc.ingest import load_bytes, load_path, walk_paths
from tests.conftest import FILLER, make_pdf, run_lcdoc

MANUAL = """---
title: The Lighthouse Manual
---

# Safety

Keep the gallery door closed in high winds. {f0}

## Lamp oil

The lamp oil is stored in the north shed, in the red drums behind the ladder. {f1}

# Maintenance

| Part | Interval |
|------|----------|
| Lens | weekly |
| Clockwork | monthly |

## The fog horn

The fog horn compressor is serviced by Ada Brennan every October. {f2}
""".format(f0=FILLER[0], f1=FILLER[1], f2=FILLER[2])


# --- documents made by each format's own library ---------------------------------------------
def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("The Lighthouse Manual", 0)
    d.add_heading("Safety", 1)
    d.add_paragraph("Keep the gallery door closed in high winds.")
    d.add_heading("Lamp oil", 2)
    d.add_paragraph("The lamp oil is stored in the north shed, in the red drums.")
    t = d.add_table(rows=2, cols=2)
    for r, (a, b) in enumerate((("Part", "Interval"), ("Lens", "weekly"))):
        t.cell(r, 0).text, t.cell(r, 1).text = a, b
    d.save(path)
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation

    p = Presentation()
    for title, body in (("Safety", "Keep the gallery door closed."),
                        ("Lamp oil", "The lamp oil is in the north shed."),
                        ("Fog horn", "Ada Brennan services the compressor.")):
        s = p.slides.add_slide(p.slide_layouts[1])
        s.shapes.title.text = title
        s.placeholders[1].text = body
    p.save(path)
    return path


def make_odt(path: Path) -> Path:
    from odfdo import Document, Header, Paragraph

    d = Document("text")
    d.body.clear()
    d.body.append(Header(1, "Safety"))
    d.body.append(Paragraph("Keep the gallery door closed in high winds."))
    d.body.append(Header(2, "Lamp oil"))
    d.body.append(Paragraph("The lamp oil is stored in the north shed."))
    d.save(path)
    return path


def make_epub(path: Path, chapters: list[tuple[str, str]]) -> Path:
    """A minimal EPUB 3: container, package, nav and one XHTML file per chapter."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:'
                   'opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/book.opf"'
                   ' media-type="application/oebps-package+xml"/></rootfiles></container>')
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml" media-type="application/xhtml+xml"/>'
                        for i in range(len(chapters)))
        spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
        z.writestr("OEBPS/book.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
                   'version="3.0"><manifest><item id="nav" href="nav.xhtml" properties="nav" '
                   f'media-type="application/xhtml+xml"/>{items}</manifest><spine>{spine}'
                   '</spine></package>')
        links = "".join(f'<li><a href="c{i}.xhtml">{t}</a></li>' for i, (t, _) in enumerate(chapters))
        z.writestr("OEBPS/nav.xhtml", f"<html><body><nav><ol>{links}</ol></nav></body></html>")
        for i, (title, body) in enumerate(chapters):  # the second chapter has no heading of its own
            head = f"<h1>{title}</h1>" if i != 1 else ""
            z.writestr(f"OEBPS/c{i}.xhtml", f"<html><body>{head}<p>{body}</p></body></html>")
    return path


def titles(doc) -> list[str]:
    return [t for _, _, t in doc.outline]


def test_word_headings_become_sections_and_tables_rows(tmp_path):
    d = load_path(make_docx(tmp_path / "m.docx"))
    assert d.kind == "docx" and titles(d) == ["The Lighthouse Manual", "Safety", "Lamp oil"]
    assert [lv for _, lv, _ in d.outline] == [1, 1, 2]
    assert "Part | Interval" in d.text and "Lens | weekly" in d.text
    at = d.outline[2][0]
    assert d.text[at:].startswith("Lamp oil")  # each heading where its text is


def test_a_slide_is_a_page_titled_by_its_title(tmp_path):
    d = load_path(make_pptx(tmp_path / "deck.pptx"))
    assert d.kind == "pptx" and d.n_pages == 3 and titles(d) == ["Safety", "Lamp oil", "Fog horn"]
    assert d.page_at(d.text.index("north shed")) == 2
    assert d.page_at(d.text.index("Ada Brennan")) == 3


def test_opendocument_text_keeps_its_outline_levels(tmp_path):
    d = load_path(make_odt(tmp_path / "m.odt"))
    assert d.kind == "odt" and [(lv, t) for _, lv, t in d.outline] == [(1, "Safety"), (2, "Lamp oil")]
    assert "north shed" in d.text


def test_epub_reads_the_spine_in_order_titled_from_the_toc(tmp_path):
    d = load_path(make_epub(tmp_path / "b.epub", [("Safety", "Doors closed."),
                                                  ("Lamp oil", "In the north shed."),
                                                  ("Fog horn", "Ada Brennan.")]))
    assert d.kind == "epub" and titles(d) == ["Safety", "Lamp oil", "Fog horn"]
    assert d.text.index("Doors") < d.text.index("north shed") < d.text.index("Ada")


def test_formats_are_found_by_content_not_name(tmp_path):
    make_docx(tmp_path / "m.docx").rename(tmp_path / "renamed.bin")
    assert load_path(tmp_path / "renamed.bin").kind == "docx"
    make_pdf(tmp_path / "report", ["A PDF without an extension about the harbour."])
    assert load_path(tmp_path / "report").kind == "pdf"
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        z.writestr("a.jpg", b"\xff\xd8" + bytes(200))
    (tmp_path / "old.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    files, skipped = walk_paths([tmp_path])
    assert {f.name for f in files} == {"renamed.bin", "report", "old.doc"}
    assert {Path(s.path).name: s.reason for s in skipped}["photos.zip"].startswith("binary file")
    with pytest.raises(InputFileError, match="old binary Office file"):
        load_path(tmp_path / "old.doc")


# --- hostile archives ------------------------------------------------------------------------
def _with_flag(data: bytes, bit: int) -> bytes:
    """The zip with a general-purpose flag bit set in every local and central header."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            b[i + off] |= bit
            i = b.find(sig, i + 4)
    return bytes(b)


def hostile(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its error must say)."""
    out = {}
    p = tmp_path / "bomb.docx"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "<w/>")
        with z.open("word/big.xml", "w", force_zip64=True) as f:
            for _ in range(300):
                f.write(bytes(1 << 20))
    out["bomb"] = (p, "zip bomb")
    # a member that declares 1 KB and inflates to 50 MB: read up to what it declares, then its
    # CRC fails
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", bytes(50 << 20))
    raw = bytearray(buf.getvalue())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.find(sig)
        raw[i + off: i + off + 4] = (1024).to_bytes(4, "little")
    (tmp_path / "liar.docx").write_bytes(bytes(raw))
    out["liar"] = (tmp_path / "liar.docx", "damaged")
    p = tmp_path / "many.epub"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("META-INF/container.xml", "<x/>")
        for i in range(10_050):
            z.writestr(f"m{i}", "")
    out["many"] = (p, "10,051 members")
    p = tmp_path / "escape.odt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("../../etc/cron.d/x.xml", "<x/>")
    out["traversal"] = (p, "path traversal")
    good = make_docx(tmp_path / "src.docx").read_bytes()
    (tmp_path / "locked.docx").write_bytes(_with_flag(good, 0x1))
    out["encrypted"] = (tmp_path / "locked.docx", "encrypted")
    (tmp_path / "cut.docx").write_bytes(good[: len(good) // 2])
    out["truncated"] = (tmp_path / "cut.docx", "damaged or truncated")
    lol = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">' for i in range(9))
        + ']><d>&a8;</d>')
    src = zipfile.ZipFile(io.BytesIO(good))
    p = tmp_path / "laughs.docx"
    with zipfile.ZipFile(p, "w") as z:
        for i in src.infolist():
            z.writestr(i, lol if i.filename == "word/document.xml" else src.read(i.filename))
    out["billion laughs"] = (p, "entit")
    (tmp_path / "src.docx").unlink()
    return out


def test_each_hostile_archive_is_refused_with_its_reason(tmp_path):
    for kind, (path, words) in hostile(tmp_path).items():
        with pytest.raises(InputFileError, match=words):
            load_path(path)


BOUNDED = """
import json, sys, time
from lcdoc.ingest import load_path
from lcdoc.errors import InputFileError
t, out = time.time(), {}
for p in sys.argv[1:]:
    try:
        load_path(p)
        out[p] = "read"
    except InputFileError as e:
        out[p] = e.problem
# VmHWM is this program's own peak (getrusage would count the forking parent's, kept over exec)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
print(json.dumps({"results": out, "seconds": time.time() - t, "max_rss_mb": hwm / 1024}))
"""


def test_hostile_archives_cost_bounded_memory_and_time(tmp_path):
    files = [str(p) for p, _ in hostile(tmp_path).values()]
    r = subprocess.run([sys.executable, "-c", BOUNDED, *files], capture_output=True, text=True,
                       timeout=300)
    got = json.loads(r.stdout)
    assert all(v != "read" for v in got["results"].values()), got
    assert got["seconds"] < 30 and got["max_rss_mb"] < 400, got


@pytest.mark.slow
def test_a_mixed_folder_indexes_every_good_file_and_names_every_bad_one(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_docx(folder / "manual.docx")
    make_pptx(folder / "deck.pptx")
    make_odt(folder / "notes.odt")
    make_epub(folder / "book.epub", [("Safety", "Doors."), ("Lamp oil", "North shed."), ("Horn", "Ada.")])
    (tmp_path / "bad").mkdir()
    bad = hostile(tmp_path / "bad")
    for name, (p, _) in bad.items():
        shutil.copy(p, folder / p.name)
    r = run_lcdoc(["index", str(folder), "--index", "mixed", "--json"],
                  {"LCDOC_INDEX_DIR": str(tmp_path / "idx")})
    assert r.returncode == 1, r.stderr[-2000:]  # the good ones indexed, each bad one named
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 4
    assert {Path(f["path"]).name for f in rep["failed"]} == {p.name for p, _ in bad.values()}
    for name, (p, words) in bad.items():
        assert any(p.name in line and words.split()[0].lower() in line.lower()
                   for line in r.stderr.splitlines()), (name, r.stderr[-3000:])


# --- documents other tools wrote ------------------------------------------------------------
needs_pandoc = pytest.mark.skipif(not shutil.which("pandoc"), reason="pandoc is not installed "
                                  "(apt install pandoc): it writes the other tools' documents")


@needs_pandoc
@pytest.mark.slow
def test_pandoc_documents_name_the_chapter_that_holds_the_answer(tmp_path):
    src = tmp_path / "manual.md"
    src.write_text(MANUAL)
    folder = tmp_path / "docs"
    folder.mkdir()
    for ext in ("docx", "odt", "epub", "pptx"):
        subprocess.run(["pandoc", str(src), "-s", "-o", str(folder / f"manual.{ext}")], check=True)
    env = {"LCDOC_INDEX_DIR": str(tmp_path / "idx")}
    r = run_lcdoc(["index", str(folder), "--index", "p", "--json"], env)
    assert r.returncode == 0 and json.loads(r.stdout)["indexed"] == 4, r.stderr
    for question, heading in (("Where is the lamp oil stored?", "Lamp oil"),
                              ("Who services the fog horn compressor?", "The fog horn")):
        r = run_lcdoc(["search", question, "--index", "p", "-k", "8", "--json"], env)
        hits = json.loads(r.stdout)["results"]
        for ext in ("docx", "odt", "epub", "pptx"):
            best = next(h for h in hits if h["path"].endswith(ext))
            assert heading in best["heading"] or (ext == "pptx" and best["page"]), (ext, best)


@pytest.mark.slow
def test_a_piped_word_document_is_answered(tmp_path):
    data = make_docx(tmp_path / "m.docx").read_bytes()
    r = subprocess.run([sys.executable, "-m", "lcdoc", "ask", "Where is the lamp oil stored?",
                        "-", "--json", "--no-server", "--max-tokens", "24", "--index-dir",
                        str(tmp_path / "idx")], input=data, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["sources"][0]["path"] == "<stdin>" and "Lamp oil" in out["sources"][0]["heading"]


# --- scanned PDFs ----------------------------------------------------------------------------
needs_tesseract = pytest.mark.skipif(not shutil.which("tesseract"), reason="Tesseract is not "
                                     "installed (apt install tesseract-ocr)")


def scanned_pdf(tmp_path: Path, pages: list[str]) -> Path:
    """A PDF of page images only: a real PDF rendered and saved as pictures (a scan)."""
    import pypdfium2 as pdfium

    text_pdf = make_pdf(tmp_path / "text.pdf", pages, title="Harbour report")
    pdf = pdfium.PdfDocument(str(text_pdf))
    images = [pdf[i].render(scale=200 / 72).to_pil().convert("RGB") for i in range(len(pdf))]
    pdf.close()
    out = tmp_path / "scan.pdf"
    images[0].save(out, save_all=True, append_images=images[1:], resolution=200)
    return out


@needs_tesseract
def test_scanned_pages_are_read_by_ocr_once_with_their_page_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from lcdoc.ingest import ocr

    scan = scanned_pdf(tmp_path, ["The harbour master is Ines Roe.",
                                  "The ferry leaves at seven from pier four."])
    d = load_path(scan)
    assert d.n_pages == 2
    assert "Ines Roe" in d.page_text(1) and "pier four" in d.page_text(2)
    assert ocr.cache_file(d.sha256).exists()
    monkeypatch.setattr(ocr, "_ocr", lambda *a: pytest.fail("OCR ran again"))
    assert load_path(scan).text == d.text  # from the cache


def test_without_tesseract_a_scan_is_named_with_how_to_read_it(tmp_path, monkeypatch):
    from lcdoc.ingest import ocr

    monkeypatch.setattr(ocr, "tesseract_version", lambda: None)
    scan = scanned_pdf(tmp_path, ["The harbour master is Ines Roe."])
    with pytest.raises(InputFileError, match="apt install tesseract-ocr"):
        load_path(scan)


# --- anything at all ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4000),
       ext=st.sampled_from([".docx", ".pptx", ".odt", ".odp", ".ods", ".epub", ".doc", ".bin"]))
def test_any_bytes_under_a_new_extension_give_a_document_or_a_named_error(data, ext):
    try:
        load_bytes(data, "f" + ext)
    except InputFileError as e:
        assert e.problem


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(
    st.sampled_from(["mimetype", "word/document.xml", "ppt/presentation.xml", "content.xml",
                     "META-INF/container.xml", "OEBPS/a.opf", "../x", "x.xhtml"]),
    st.binary(max_size=300)), max_size=6))
def test_any_zip_of_document_members_gives_a_document_or_a_named_error(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    try:
        load_bytes(buf.getvalue(), "f.docx")
    except InputFileError as e:
        assert e.problem
