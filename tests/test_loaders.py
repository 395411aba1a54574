import gzip

import pytest

from lcdoc.errors import InputFileError
from lcdoc.ingest import load_bytes, load_path, walk_paths
from tests.conftest import make_pdf


def test_pdf_keeps_text_per_page(tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", ["alpha page one", "bravo page two", "charlie page three"])
    doc = load_path(pdf)
    assert doc.kind == "pdf" and doc.n_pages == 3
    assert "bravo" in doc.page_text(2) and "bravo" not in doc.page_text(1)
    assert doc.page_at(doc.text.index("charlie")) == 3


def test_html_drops_markup_scripts_and_styles_but_keeps_headings():
    doc = load_bytes(b"<html><head><style>p{}</style></head><body><h2>Title</h2><p>Hello &amp; "
                     b"bye</p><script>evil()</script></body></html>", "x.html")
    assert "## Title" in doc.text and "Hello & bye" in doc.text
    assert "evil" not in doc.text and "p{}" not in doc.text and "<" not in doc.text


def test_undecodable_bytes_are_replaced_not_fatal():
    doc = load_bytes(b"good text \xff\xfe more text", "x.txt")
    assert "good text" in doc.text and "more text" in doc.text


def test_gzipped_text_is_read_transparently():
    doc = load_bytes(gzip.compress(b"# Head\n\ninside a gzip"), "readme.md.gz")
    assert doc.kind == "markdown" and "inside a gzip" in doc.text


@pytest.mark.parametrize(
    "data,problem",
    [
        (b"", "empty"),
        (b"%PDF-1.4\n1 0 obj garbage", "PDF"),
        (b"\x7fELF\x00\x00\x01binary", "binary"),
    ],
)
def test_bad_files_raise_a_named_error(data, problem):
    with pytest.raises(InputFileError) as e:
        load_bytes(data, "bad.pdf" if b"PDF" in data else "bad.bin")
    assert problem in str(e.value) and "bad." in str(e.value)


def test_encrypted_pdf_is_reported_as_encrypted(tmp_path):
    from pypdf import PdfWriter

    src = make_pdf(tmp_path / "a.pdf", ["secret text"])
    w = PdfWriter()
    w.append(str(src))
    w.encrypt("hunter2")
    w.write(str(tmp_path / "enc.pdf"))
    with pytest.raises(InputFileError, match="encrypted"):
        load_path(tmp_path / "enc.pdf")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputFileError, match="nope.txt: no such file"):
        load_path(tmp_path / "nope.txt")


def test_walk_skips_hidden_binary_and_oversized_with_reasons(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("hello")
    (tmp_path / ".secret.txt").write_text("hidden")
    (tmp_path / "blob.dat").write_bytes(b"\x00\x01\x02" * 10)
    (tmp_path / "big.txt").write_text("x" * 5000)
    (tmp_path / "c.md").write_text("# c")
    files, skipped = walk_paths([tmp_path], max_bytes=4000)
    names = sorted(f.name for f in files)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in skipped}
    assert names == ["a.txt", "c.md"]
    assert "hidden" in reasons[".secret.txt"] and "binary" in reasons["blob.dat"]
    assert "limit" in reasons["big.txt"]


def test_walk_include_and_exclude_globs(tmp_path):
    for n in ["a.md", "b.txt", "drafts/c.md"]:
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_text("text")
    files, _ = walk_paths([tmp_path], include=("*.md",), exclude=("drafts/*",))
    assert [f.name for f in files] == ["a.md"]


def test_one_large_pdf_is_split_across_processes_without_changing_its_text(tmp_path, monkeypatch):
    from lcdoc.index import build
    from tests.conftest import FILLER

    pages = [f"Page marker {i}. " + " ".join(FILLER[(i + j) % 5] for j in range(3)) for i in range(70)]
    pdf = make_pdf(tmp_path / "big.pdf", pages)
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 4000)
    monkeypatch.setattr(build, "SPLIT_MIN_BYTES", 0)  # real manuals are MBs; this one is small
    monkeypatch.setattr(build, "MIN_PAGES", 16)
    ranges = build._page_ranges(pdf, 2)
    assert len(ranges) == 4 and ranges[0][0] == 0 and ranges[-1][1] == 70
    got = dict(build.load_all([pdf, bad], 2))
    whole = load_path(pdf)
    assert got[pdf].text == whole.text and got[pdf].page_starts == whole.page_starts
    assert got[pdf].sha256 == whole.sha256  # the incremental check sees the same file
    assert "Page marker 69." in got[pdf].text[got[pdf].page_starts[69]:]
    assert isinstance(got[bad], InputFileError) and "bad.pdf" in str(got[bad])
