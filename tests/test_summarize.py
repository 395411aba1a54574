"""`lcdoc summarize` with the packaged model: stuffed vs hierarchical, failures, kill and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FILLER, make_pdf, run_lcdoc

pytestmark = pytest.mark.slow


def words(text):
    return {w for w in re.findall(r"[a-z]{4,}", text.lower())}


def run(args, env=None, **kw):
    return run_lcdoc(["summarize", *args], env, timeout=900, **kw)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "reports"
    (root / "long").mkdir(parents=True)
    (root / "note.txt").write_text("Harbour note. The harbour festival moves to the second weekend "
                                   "of August and the fireworks budget was cut by a third.")
    pages = [f"Chapter {i}. " + " ".join(FILLER[(i + j) % 5] for j in range(4)) for i in range(20)]
    make_pdf(root / "long" / "annual.pdf", pages, title="Annual report of the water board")
    (root / "long" / "broken.pdf").write_bytes(b"%PDF-1.4\n%garbage, not a pdf")
    return root


def test_folder_is_summarised_long_pdf_through_the_hierarchy(folder, tmp_path):
    out = tmp_path / "out"
    r = run([str(folder), "--out", str(out), "--ctx", "2048", "--max-words", "30", "--json",
             "--index-dir", str(tmp_path / "idx")])
    assert r.returncode == 1, r.stderr  # one file failed
    assert "broken.pdf" in r.stderr
    rows = {os.path.basename(d["path"]): d for d in map(json.loads, r.stdout.splitlines())}
    assert set(rows) == {"note.txt", "annual.pdf"}
    assert rows["note.txt"]["route"] == "stuff" and rows["annual.pdf"]["route"] == "map-reduce"
    assert rows["annual.pdf"]["chunks"] > 1
    for name, row in rows.items():
        assert set(row) >= {"path", "summary", "route", "chunks", "tokens", "seconds"}
        assert row["summary"].strip()
    # Each summary is drawn from its own document.
    note_words = words((folder / "note.txt").read_text())
    assert len(words(rows["note.txt"]["summary"]) & note_words) >= 3
    assert len(words(rows["annual.pdf"]["summary"]) & words(" ".join(FILLER))) >= 3
    assert (out / "note.txt.md").exists() and (out / "long" / "annual.pdf.md").exists()
    index = (out / "index.md").read_text()
    assert "annual.pdf" in index and "broken.pdf" in index


def test_killed_run_resumes_without_redoing_finished_documents(tmp_path):
    src = tmp_path / "notes"
    src.mkdir()
    for i in range(4):
        (src / f"n{i}.txt").write_text(f"Note {i}. " + FILLER[i] + " " + FILLER[(i + 1) % 5])
    out = tmp_path / "out"
    args = [sys.executable, "-m", "lcdoc", "summarize", str(src), "--out", str(out),
            "--max-words", "30", "--index-dir", str(tmp_path / "idx")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("n*.txt.md")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = sorted(out.glob("n*.txt.md"))
    assert 1 <= len(first) < 4, "killed too late to test resuming"
    stamps = {p: p.stat().st_mtime_ns for p in first}
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # none redone
    assert len(list(out.glob("n*.txt.md"))) == 4
    assert len(re.findall(r"^reused ", r.stderr, re.M)) == len(first)
    assert not list(out.glob(".*.tmp"))  # no torn writes left behind


@pytest.mark.parametrize("chunk", ["", "5"], ids=["whole-prompts", "prompts-in-5-token-chunks"])
def test_parallel_decoding_summarises_each_document_from_its_own_text(tmp_path, chunk):
    # With 5-token chunks every prompt is fed across dozens of the others' decode steps: a
    # misplaced position or output row would give a document another's summary.
    src = tmp_path / "notes"
    src.mkdir()
    topics = {"bakery": "The bakery on Quay Street bakes rye bread and opens at six every morning.",
              "ferry": "The ferry to the island leaves at noon and carries forty cars and bicycles.",
              "library": "The library lends books, maps and telescopes to members of the observatory club."}
    for name, text in topics.items():
        (src / f"{name}.txt").write_text(text + " " + FILLER[len(name) % 5])
    r = run([str(src), "--parallel", "3", "--max-words", "30", "--json",
             "--index-dir", str(tmp_path / "idx")], env={**os.environ, "LCDOC_PREFILL_CHUNK": chunk})
    assert r.returncode == 0, r.stderr
    rows = {os.path.basename(d["path"]): d for d in map(json.loads, r.stdout.splitlines())}
    assert set(rows) == {f"{n}.txt" for n in topics}
    for name, text in topics.items():
        summary = rows[f"{name}.txt"]["summary"]
        own = len(words(summary) & words(text))
        others = max(len(words(summary) & words(t)) for n, t in topics.items() if n != name)
        assert own >= 2 and own > others, (name, summary)
