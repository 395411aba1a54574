from lcdoc.ingest import Document, chunk_document, load_bytes, load_path
from lcdoc.ingest.chunking import embedding_token_counter, find_headings
from tests.conftest import FILLER, make_pdf


def test_markdown_chunks_carry_heading_paths_and_exact_offsets():
    body = "\n\n".join(FILLER * 3)
    text = f"# Manual\n\nintro\n\n## Install\n\n{body}\n\n### From source\n\n{body}\n\n## Usage\n\n{body}"
    doc = load_bytes(text.encode(), "m.md")
    chunks = chunk_document(doc, max_tokens=128, overlap_tokens=16)
    assert len(chunks) > 5
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
    headings = {c.heading for c in chunks}
    assert "Manual > Install > From source" in headings and "Manual > Usage" in headings


def test_chunks_respect_the_token_budget():
    doc = load_bytes(("\n\n".join(FILLER) * 20).encode(), "t.txt")
    count = embedding_token_counter()
    chunks = chunk_document(doc, max_tokens=100, overlap_tokens=10)
    assert max(count([c.text])[0] for c in chunks) <= 100
    assert chunks[-1].end == len(doc.text)


def test_a_single_giant_paragraph_is_still_split():
    doc = Document("x.txt", "word " * 3000, "text", "0")
    chunks = chunk_document(doc, max_tokens=128, overlap_tokens=0)
    assert len(chunks) >= 20 and all(c.n_tokens <= 128 for c in chunks)


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    doc = load_bytes(" ".join(f"Sentence number {i} is here." for i in range(300)).encode(), "t.txt")
    chunks = chunk_document(doc, max_tokens=64, overlap_tokens=16)
    assert any(b.start < a.end for a, b in zip(chunks, chunks[1:]))


def test_pdf_chunks_know_their_pages(tmp_path):
    pages = [" ".join(FILLER) + f" Marker{i}." for i in range(4)]
    doc = load_path(make_pdf(tmp_path / "p.pdf", pages))
    chunks = chunk_document(doc, max_tokens=96, overlap_tokens=0)
    marker = next(c for c in chunks if "Marker2" in c.text)
    assert marker.page_start <= 3 <= marker.page_end
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 4


def test_rst_underlines_and_numbered_pdf_headings_are_found():
    rst = "Title\n=====\n\ntext\n\nSub\n---\n\nmore"
    assert [(lvl, t) for _, lvl, t in find_headings(rst, "rst")] == [(1, "Title"), (2, "Sub")]
    pdf = "2.1 Installation\nRun it.\n3. Turn the key and wait.\n"
    assert [t for *_, t in find_headings(pdf, "pdf")] == ["2.1 Installation"]


def test_table_of_contents_lines_are_not_headings():
    toc = ("Contents\n1 Definition of CRC 2\n3.1 Incremental CRC computation . . . . . . . 4\n"
           "4.3. Memcheck Command-Line Options ........ 65\n\n2 Related work\nText of it.\n")
    assert [t for *_, t in find_headings(toc, "pdf")] == ["2 Related work"]


def test_pdf_sections_come_from_its_outline_not_from_a_footnote_line(tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    from lcdoc.ingest import load_path

    pages = [("1 Introduction", "R is an environment for statistics. ", "4 To quit the R program the command is"),
             ("1.7 Using R interactively", "Start R from a shell in a working directory. ", None),
             ("1.9 Getting help", "The help function shows documentation. ", None)]
    c = canvas.Canvas(str(tmp_path / "r.pdf"), pagesize=A4)
    for i, (title, sentence, foot) in enumerate(pages):
        c.bookmarkPage(f"p{i}")
        c.addOutlineEntry(title, f"p{i}", level=0 if i == 0 else 1)
        c.drawString(50, 800, title)
        for k in range(20):
            c.drawString(50, 780 - 13 * k, sentence * 2)
        if foot:
            c.drawString(50, 60, foot)
        c.showPage()
    c.save()
    doc = load_path(tmp_path / "r.pdf")
    assert [t for _, _, t in doc.outline] == [p[0] for p in pages]
    heads = {ch.heading for ch in chunk_document(doc, 128, 16)}
    assert "1 Introduction > 1.9 Getting help" in heads
    assert not any("To quit" in h for h in heads)
