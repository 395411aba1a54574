"""The hybrid index on real SQLite and FAISS files with the packaged MiniLM."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lcdoc.errors import IndexLockedError, IndexMissingError
from lcdoc.index import Index, fuse, update_index
from lcdoc.index.lock import WriteLock
from tests.conftest import FILLER, run_lcdoc


def test_fusion_rewards_agreement_and_leans_to_bm25():
    bm25 = [(1, 12.0), (2, 11.0), (3, 4.0)]
    dense = [(3, 0.80), (2, 0.75), (9, 0.30)]
    fused = dict(fuse(bm25, dense))
    assert fused[2] > fused[1] > fused[3] > fused[9]  # 2 is near the top of both lists
    assert [i for i, _ in fuse(bm25, [])] == [1, 2, 3]  # one list alone keeps its order
    assert [i for i, _ in fuse([], dense)] == [3, 2, 9]
    assert fuse([(5, 3.0)], [(5, 0.5)])[0][1] == pytest.approx(1.0)  # a lone hit keeps its weight


_ranked = st.lists(st.tuples(st.integers(0, 30), st.floats(-50, 50, allow_nan=False)),
                   max_size=20, unique_by=lambda t: t[0]).map(lambda xs: sorted(xs, key=lambda t: -t[1]))


@given(_ranked, _ranked)
def test_fusion_is_bounded_and_never_scores_a_dominated_chunk_higher(bm25, dense):
    fused = fuse(bm25, dense)
    assert {i for i, _ in fused} == {i for i, _ in bm25} | {i for i, _ in dense}
    assert all(-1e-9 <= s <= 1 + 1e-9 for _, s in fused)
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)
    b, d, f = dict(bm25), dict(dense), dict(fused)
    for x in f:  # x at least as good as y in both lists (present where y is): x is not below y
        for y in f:
            if x in b and x in d and all(z[x] >= z[y] for z in (b, d) if y in z):
                assert f[x] >= f[y] - 1e-9, (x, y)


@pytest.fixture()
def built(corpus, tmp_path, embedder):
    idx = Index.open("t", tmp_path, create=True)
    rep = update_index(idx, [corpus])
    yield idx, rep
    idx.close()


def test_index_reads_every_format_and_finds_each_fact(built, corpus):
    idx, rep = built
    assert rep.indexed == 5 and not rep.failed and rep.pages == 6
    questions = {
        "who tests the emergency generator?": ("report.pdf", "Olander"),
        "how is the turbidity meter calibrated": ("guide.md", "grey reference bottle"),
        "when is the harbour festival": ("notes.html", "second weekend of August"),
        "how much unused leave carries over": ("policy.rst", "ten days"),
        "what time does the bakery open": ("plain.txt", "Quay Street"),
    }
    for q, (name, fact) in questions.items():
        hits = idx.search(q, k=5)
        assert any(h.path.endswith(name) and fact in h.text for h in hits), q
    pdf_hit = next(h for h in idx.search("emergency generator duty engineer", k=3)
                   if h.path.endswith("report.pdf"))
    assert pdf_hit.page_start <= 4 <= pdf_hit.page_end


def test_bm25_and_dense_each_contribute(built):
    idx, _ = built
    assert idx.search("Olander", k=3, mode="bm25")[0].text.count("Olander") == 1
    # No word in common with the passage: only the dense side can find it.
    dense = idx.search("checking the backup power supply", k=5, mode="dense")
    assert any("generator" in h.text for h in dense)


def test_reindex_is_incremental(built, corpus, tmp_path):
    idx, _ = built
    work = tmp_path / "work"
    shutil.copytree(corpus, work)
    rep = update_index(idx, [work])
    assert rep.indexed == 5  # new paths
    rep = update_index(idx, [work])
    assert rep.indexed == 0 and rep.unchanged == 5 and rep.chunks == 0
    (work / "plain.txt").write_text("The bakery moved to Harbour Road and opens at seven.")
    (work / "notes.html").unlink()
    rep = update_index(idx, [work])
    assert rep.indexed == 1 and rep.unchanged == 3 and rep.removed == 1
    paths = [d.path for d in idx.store.documents()]
    assert str(work / "notes.html") not in paths and str(corpus / "notes.html") in paths
    hits = idx.search("bakery opening hours", k=3)
    assert any("Harbour Road" in h.text for h in hits)
    assert not any(h.path == str(work / "plain.txt") and "Quay" in h.text for h in hits)
    assert idx.faiss().ntotal == idx.store.counts()["chunks"]


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexMissingError, match="no such index: nope"):
        Index.open("nope", tmp_path)


def test_second_writer_fails_clearly_while_first_holds_the_lock(tmp_path, corpus):
    idx = Index.open("t", tmp_path, create=True)
    with WriteLock(idx.folder):
        with pytest.raises(IndexLockedError, match="another lcdoc process"):
            update_index(idx, [corpus], lock_wait_s=0.5)


def test_stale_or_missing_faiss_file_is_rebuilt_from_sqlite(built):
    idx, _ = built
    n = idx.store.counts()["chunks"]
    for f in idx.folder.glob("vectors.*.npy"):
        f.unlink()
    fresh = Index.open(str(idx.folder))
    assert fresh.faiss().ntotal == n
    assert list(idx.folder.glob("vectors.*.npy"))


KILL_SCRIPT = """
import sys
from lcdoc.index import Index, update_index
idx = Index.open(sys.argv[1], create=True)
update_index(idx, [sys.argv[2]], commit_chunks=4, workers=1)
"""


def test_index_killed_mid_write_still_opens_consistent(tmp_path, embedder):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.txt").write_text(f"Document {i}. " + " ".join(FILLER) * 2)
    folder = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder), str(src)])
    db = folder / "index.sqlite"
    deadline = time.time() + 240
    gen = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    row = con.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
                    gen = int(row[0]) if row else 0
            except sqlite3.Error:
                pass
            if gen >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "indexing finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    idx = Index.open(str(folder))
    docs = idx.store.documents()
    assert 0 < len(docs) < 40
    assert all(d.n_chunks > 0 for d in docs)
    assert idx.faiss().ntotal == idx.store.counts()["chunks"]
    assert idx.search("Document 3", k=3)
    rep = update_index(idx, [src])  # resumes: finished files are not redone
    assert rep.unchanged == len(docs) and rep.indexed == 40 - len(docs)


def run_cli(*args, stdin=None, env=None):
    return run_lcdoc(list(args), env, stdin)


def test_cli_index_and_search_json(corpus, tmp_path):
    bad = tmp_path / "mixed"
    shutil.copytree(corpus, bad)
    (bad / "broken.pdf").write_bytes(b"%PDF-1.5\n%%garbage that is not a pdf")
    (bad / "empty.txt").write_bytes(b"")
    (bad / "blob.bin").write_bytes(bytes(range(256)) * 4)
    r = run_cli("index", str(bad), "--index", "cli", "--index-dir", str(tmp_path), "--json")
    assert r.returncode == 1, r.stderr  # broken.pdf failed (named); empty and binary are skipped
    out = json.loads(r.stdout)
    assert out["indexed"] == 5 and out["chunks"] > 0
    assert "broken.pdf" in r.stderr and "empty.txt" in r.stderr and "blob.bin" in r.stderr
    r = run_cli("search", "turbidity meter calibration", "-i", "cli", "--json", "-k", "3",
                env={"LCDOC_INDEX_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert set(res[0]) >= {"path", "page", "heading", "text", "score"}
    assert res[0]["path"].endswith("guide.md") and res[0]["heading"] == "Field guide > Equipment"


def test_cli_fails_when_nothing_could_be_indexed(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.pdf").write_bytes(b"%PDF-1.4 junk")
    r = run_cli("index", str(tmp_path / "bad"), "-i", "b", "--index-dir", str(tmp_path))
    assert r.returncode == 1 and "x.pdf" in r.stderr
    r = run_cli("search", "x", "-i", "nope", "--index-dir", str(tmp_path))
    assert r.returncode == 1 and "no such index: nope" in r.stderr


def test_index_exit_code_tells_files_left_out_on_purpose_from_files_it_could_not_read(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lamp oil is stored in the blue shed behind the mill.\n")
    (docs / "blob.bin").write_bytes(bytes(range(256)) * 4)  # binary: left out on purpose
    (docs / ".hidden.txt").write_text("hidden\n")
    r = run_cli("index", str(docs), "-i", "k", "--index-dir", str(tmp_path / "idx"), "--json")
    assert r.returncode == 0 and "blob.bin" in r.stderr, r.stderr
    os.symlink("nowhere.txt", docs / "gone.txt")  # meant to be read, and cannot be
    r = run_cli("index", str(docs), "-i", "k", "--index-dir", str(tmp_path / "idx"), "--json")
    assert r.returncode == 1 and "gone.txt" in r.stderr, r.stderr
    assert json.loads(r.stdout)["unchanged"] == 1  # the good file is still indexed


def test_one_text_in_two_files_is_given_to_the_model_once(tmp_path):
    from lcdoc.qa.strategies import rag_passages

    docs = tmp_path / "docs"
    docs.mkdir()
    manual = "\n\n".join(f"Section {i}. " + " ".join(FILLER[(i + j) % 5] for j in range(3))
                         for i in range(6)) + "\n\nThe relief valve is tested every spring.\n"
    (docs / "manual.md").write_text(manual)
    (docs / "manual-copy.txt").write_text(manual)  # the same manual, saved in another format
    (docs / "other.txt").write_text("The relief valve on the east boiler was replaced in 2019.\n")
    with Index.open("dup", tmp_path / "idx", create=True) as idx:
        update_index(idx, [docs])
        passages, _ = rag_passages(idx, "When is the relief valve tested?", 4000,
                                   lambda t: len(t) // 4)
    texts = [" ".join(p.text.split()) for p in passages]
    assert any("tested every spring" in t for t in texts)
    assert sum("tested every spring" in t for t in texts) == 1, [p.path for p in passages]
    assert len(set(texts)) == len(texts)
    assert any(p.path.endswith("other.txt") for p in passages)  # other files still come
