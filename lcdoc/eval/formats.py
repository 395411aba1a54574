"""Extraction speed per format, OCR's pages per second, and whether each format's copy of one
real manual names the chapter that holds an answer.

    python -m lcdoc.eval.formats --html /usr/share/doc/bzip2/manual.html \\
        --pdf /usr/share/doc/bzip2/manual.pdf.gz [--ocr-pages 6] [--write docs/benchmarks.md]

pandoc (a tool no one here wrote) converts the HTML manual to .docx, .odt, .epub and .pptx; the
PDF is the same manual as its authors published it, and a rendering of its first pages as
images stands in for a scan. Each question's chapter is known.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# (question, a word of the heading that holds the answer) for the bzip2 manual.
QUESTIONS = [
    ("How can data be recovered from a damaged compressed file?", "damaged"),
    ("How much memory does bzip2 need to decompress a file?", "memory"),
    ("How do I make a Windows DLL of the library?", "windows dll"),
]
PANDOC = ("docx", "odt", "epub", "pptx")


def convert(html: Path, work: Path) -> dict[str, Path]:
    out = {}
    for ext in PANDOC:
        target = work / f"manual.{ext}"
        subprocess.run(["pandoc", str(html), "-s", "-o", str(target)], check=True,
                       capture_output=True)
        out[ext] = target
    return out


def time_load(path: Path, reps: int = 3) -> tuple[float, object]:
    from lcdoc.ingest import load_path

    best, doc = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        doc = load_path(path)
        best = min(best, time.perf_counter() - t0)
    return best, doc


def scan_of(pdf: Path, pages: int, work: Path) -> Path:
    """The first pages of a PDF rendered at 200 dpi and saved as an image-only PDF."""
    import pypdfium2 as pdfium

    from lcdoc.ingest.loaders import _gunzip

    doc = pdfium.PdfDocument(_gunzip(pdf.read_bytes(), str(pdf)))
    images = [doc[i].render(scale=200 / 72).to_pil().convert("RGB")
              for i in range(min(pages, len(doc)))]
    doc.close()
    out = work / "scan.pdf"
    images[0].save(out, save_all=True, append_images=images[1:], resolution=200)
    return out


def chapter_named(files: dict[str, Path], work: Path) -> dict[str, list[bool]]:
    """format -> for each question, whether its best hit in that format's copy names the chapter."""
    from lcdoc.index import Index, update_index

    idx = Index.open(str(work / "index"), create=True)
    update_index(idx, list(files.values()))
    out: dict[str, list[bool]] = {ext: [] for ext in files}
    for question, word in QUESTIONS:
        hits = idx.search(question, k=40)
        for ext, path in files.items():
            best = next((h for h in hits if h.path == str(Path(path).resolve())), None)
            out[ext].append(bool(best and word in best.heading.lower()))
    idx.close()
    return out


def run(html: Path, pdf: Path, ocr_pages: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-formats-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # a cold OCR cache
    try:
        files = {"html": html, "pdf": pdf, **convert(html, work)}
        rows = []
        for ext, path in files.items():
            seconds, doc = time_load(path)
            size = path.stat().st_size
            rows.append({"format": ext, "bytes": size, "chars": len(doc.text),
                         "pages": doc.n_pages, "sections": len(doc.outline), "seconds": seconds,
                         "mb_per_s": size / 2**20 / seconds, "pages_per_s":
                         doc.n_pages / seconds if doc.n_pages else None})
        scan = scan_of(pdf, ocr_pages, work)
        t0 = time.perf_counter()
        from lcdoc.ingest import load_path

        d = load_path(scan)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_path(scan)
        warm = time.perf_counter() - t0
        named = chapter_named({k: v for k, v in files.items() if k != "pdf"} | {"pdf": pdf}, work)
        return {"rows": rows, "ocr": {"pages": d.n_pages, "cold_s": cold, "warm_s": warm,
                                      "pages_per_s": d.n_pages / cold, "chars": len(d.text)},
                "named": named}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict, command: str) -> str:
    lines = [f"Command: `{command}`", f"Machine: {platform.node()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| format | size | text | pages | sections | extraction | MB/s | pages/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        pps = f"{x['pages_per_s']:.1f}" if x["pages_per_s"] else "-"
        lines.append(f"| {x['format']} | {x['bytes'] / 1024:,.0f} KB | {x['chars']:,} chars | "
                     f"{x['pages'] or '-'} | {x['sections']} | {x['seconds']:.3f} s | "
                     f"{x['mb_per_s']:.2f} | {pps} |")
    o = r["ocr"]
    lines += ["", f"OCR (Tesseract, 300 dpi, every core): {o['pages']} scanned pages in "
                  f"{o['cold_s']:.1f} s = **{o['pages_per_s']:.2f} pages/s**; read again from the "
                  f"OCR cache in {o['warm_s']:.2f} s ({o['chars']:,} characters recognised).", "",
              "Chapter named by the best hit in each format's copy (questions: "
              + "; ".join(f'"{q}" -> {w}' for q, w in QUESTIONS) + "):", "",
              "| format | " + " | ".join(f"q{i + 1}" for i in range(len(QUESTIONS))) + " |",
              "|---|" + "---|" * len(QUESTIONS)]
    for ext, ok in r["named"].items():
        lines.append(f"| {ext} | " + " | ".join("yes" if x else "no" for x in ok) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", type=Path, default=Path("/usr/share/doc/bzip2/manual.html"))
    ap.add_argument("--pdf", type=Path, default=Path("/usr/share/doc/bzip2/manual.pdf.gz"))
    ap.add_argument("--ocr-pages", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write", type=Path, help="Append the tables to this Markdown file.")
    a = ap.parse_args(argv)
    r = run(a.html, a.pdf, a.ocr_pages)
    if a.json:
        print(json.dumps(r, indent=1))
        return
    command = "python -m lcdoc.eval.formats " + " ".join(argv or [])
    text = markdown(r, command.strip())
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n\n## Formats: extraction speed, OCR, chapters named\n\n" + text + "\n")


if __name__ == "__main__":
    main()
