"""Nothing lost, nothing crashes: per-file isolation, safe re-index, confined index names."""

import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lcdoc.errors import InputFileError
from lcdoc.ingest import Document, chunk_document
from lcdoc.ingest.loaders import load_bytes

from tests.conftest import run_lcdoc

GOOD = {
    "good.txt": "The harbour festival moves to the second weekend of August.\n".encode(),
    "latin1.txt": "Caf\u00e9 notes: the cider press ran for three weeks in October.\n".encode("latin-1"),
    "utf16.txt": "The reading programme doubled its attendance this spring.\n".encode("utf-16"),
    "notes.md": b"# Notes\n\nThe pumping station filters are replaced every six weeks.\n",
    "page.html": b"<html><script>var x = 1;</script><p>The ferry to the island leaves at noon.</p></html>",
    "long.txt": ("The northern bridge repairs wait for the river to drop. " * 6000).encode(),
}
ODD_NAME = os.fsdecode(b"caf\xe9-bakery.txt")  # a latin-1 file name on a UTF-8 system


def run_cli(*args, env):
    return run_lcdoc(list(args), env)


@pytest.fixture()
def mixed(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for name, data in GOOD.items():
        (root / name).write_bytes(data)
    (root / ODD_NAME).write_text("The bakery on Quay Street opens at six.\n")
    (root / "corrupt.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(300))
    (root / "truncated.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<")
    (root / "empty.txt").write_bytes(b"")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 8)
    os.mkfifo(root / "fifo.txt")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("nowhere", root / "dangling.txt")
    return root


@pytest.mark.slow
def test_a_folder_of_good_and_bad_files_indexes_every_good_one_and_names_every_bad_one(mixed, tmp_path):
    env = {"LCDOC_INDEX_DIR": str(tmp_path / "idx")}
    r = run_cli("index", str(mixed), "--index", "m", "--json", env=env)
    # every good file indexed, every bad one named, and exit 1: some could not be read
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert out["indexed"] == len(GOOD) + 1
    named = {os.path.basename(x["path"]) for x in out["failed"] + out["skipped"]}
    assert {"corrupt.gz", "truncated.pdf", "empty.txt", "blob.bin", "fifo.txt", "loop-a", "loop-b",
            "dangling.txt"} <= named
    reasons = {os.path.basename(x["path"]): x["reason"] for x in out["failed"] + out["skipped"]}
    assert "FIFO" in reasons["fifo.txt"] and "loop" in reasons["loop-a"]
    for sentence in ("second weekend of August", "cider press ran for three weeks",
                     "reading programme doubled", "filters are replaced every six weeks",
                     "ferry to the island leaves at noon", "bakery on Quay Street opens at six"):
        r = run_cli("search", sentence, "-i", "m", "--mode", "bm25", "--json", "-k", "1", env=env)
        assert r.returncode == 0, r.stderr
        assert sentence.split()[-1] in json.loads(r.stdout)["results"][0]["text"]


@pytest.mark.slow
def test_a_missing_root_keeps_its_documents_and_only_files_confirmed_gone_are_removed(tmp_path):
    from lcdoc.index import Index, update_index

    src = tmp_path / "docs"
    src.mkdir()
    for i in range(3):
        (src / f"n{i}.txt").write_text(f"Note {i}: the orchard produced {i} crates of pears.\n")
    idx = Index.open("r", tmp_path / "idx", create=True)
    update_index(idx, [src])
    moved = tmp_path / "docs-renamed"
    src.rename(moved)
    rep = update_index(idx, [src])
    assert rep.removed == 0 and idx.store.counts()["documents"] == 3
    assert rep.kept and "3 indexed document(s) are kept" in rep.kept[0].reason
    moved.rename(src)
    (src / "n1.txt").unlink()
    rep = update_index(idx, [src])
    assert rep.removed == 1 and rep.removed_paths[0].endswith("n1.txt")
    assert idx.store.counts()["documents"] == 2


def test_index_names_are_names_and_nothing_is_created_outside(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "d.txt").write_text("A note.\n")
    for bad in ("../escape", "a/b", "..", "/tmp/x"):
        r = run_cli("index", str(tmp_path / "d.txt"), "--index", bad,
                    env={"LCDOC_INDEX_DIR": str(tmp_path / "idx")})
        assert r.returncode == 2 and "index name" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.txt", "idx"]
    assert not list((tmp_path / "idx").iterdir())


def test_eval_retrieval_scratch_never_touches_a_users_folders(tmp_path):
    from lcdoc.errors import UsageError
    from lcdoc.eval.retrieval import scratch_folder

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mine.txt").write_text("keep me")
    scratch = scratch_folder(tmp_path)
    assert scratch != tmp_path / "docs" and (tmp_path / "docs" / "mine.txt").exists()
    assert scratch_folder(tmp_path) == scratch  # its own folder is reused
    other = tmp_path / "elsewhere"
    (other / "lcdoc-recall").mkdir(parents=True)  # a user's folder of that name is refused
    with pytest.raises(UsageError):
        scratch_folder(other)


def test_gpu_layers_asked_for_are_the_gpu_layers_planned():
    from lcdoc.engine.arch import read_arch
    from lcdoc.engine.llm import resolve_model
    from lcdoc.engine.plan import make_plan
    from lcdoc.engine.system import GPU, Memory

    mem = Memory(16 * 2**30, (GPU(0, "H100", 80 * 2**30, 80 * 2**30),), True)
    arch = read_arch(resolve_model(None))
    assert make_plan(arch, mem, gpu_layers=10).n_gpu_layers == 10
    assert make_plan(arch, mem).n_gpu_layers == arch.n_layer + 1


@pytest.mark.slow
def test_summaries_of_same_named_files_in_different_folders_do_not_overwrite(tmp_path):
    for folder, text in (("a", "The ferry leaves at noon."), ("b", "The bakery opens at six.")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text(text + " It is mentioned in the minutes.\n")
    out = tmp_path / "out"
    r = run_cli("summarize", str(tmp_path / "a" / "notes.txt"), str(tmp_path / "b" / "notes.txt"),
                "--out", str(out), "--max-words", "15", "--no-server",
                env={"LCDOC_INDEX_DIR": str(tmp_path / "idx")})
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in out.glob("notes*.md"))
    assert len(written) == 2 and "notes.txt.md" in written


@pytest.mark.slow
def test_a_digest_of_one_summary_longer_than_the_context_ends():
    from lcdoc.engine.llm import Engine
    from lcdoc.summarize import Summary, digest

    eng = Engine(n_ctx=1024)
    long = Summary("big.txt", "The orchard produced pears and apples in the valley. " * 400, "stuff",
                   1, 0, 0.0)
    assert isinstance(digest([long], eng, max_words=30), str)


# --- properties ----------------------------------------------------------------------------
NAMES = st.sampled_from(["a.txt", "a.md", "a.rst", "a.html", "a.pdf", "a.txt.gz", "a.pdf.gz",
                         "a", "a.htm", "a.markdown"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4000), name=NAMES)
def test_arbitrary_bytes_under_any_name_give_a_document_or_the_projects_input_error(data, name):
    try:
        doc = load_bytes(data, name)
    except InputFileError as e:
        assert e.path == name and e.problem
    else:
        assert isinstance(doc, Document) and doc.text.strip()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000).map(lambda b: b"%PDF-1." + b), name=NAMES)
def test_bytes_that_start_like_a_pdf_never_escape_as_another_error(data, name):
    try:
        load_bytes(data, name)
    except InputFileError:
        pass


def words(texts):
    return [max(1, len(t.split())) for t in texts]


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=3000)


@settings(max_examples=200, deadline=None)
@given(text=TEXT, kind=st.sampled_from(["text", "markdown", "rst", "html"]))
def test_chunk_offsets_always_map_back_to_the_document_text(text, kind):
    doc = Document("d", text, kind, "")
    for c in chunk_document(doc, 64, 8, count_tokens=words):
        assert 0 <= c.start <= c.end <= len(text)
        assert c.text.strip() == text[c.start:c.end].strip()


@settings(max_examples=100, deadline=None)
@given(pages=st.lists(st.text(min_size=1, max_size=400), min_size=1, max_size=8))
def test_chunk_pages_stay_within_the_document(pages):
    from lcdoc.ingest.loaders import pdf_document

    assume(any(p.strip() for p in pages))  # all blank ('\x85' is whitespace): "no text", rightly
    doc = pdf_document("p.pdf", "", pages)
    for c in chunk_document(doc, 48, 8, count_tokens=words):
        if c.page_start is not None:
            assert 1 <= c.page_start <= c.page_end <= doc.n_pages


@pytest.mark.slow
def test_an_index_refuses_another_embedding_model_of_the_same_dimension(tmp_path):
    from lcdoc.errors import UsageError
    from lcdoc.index import Index, update_index
    from lcdoc.models import find_embedding_model

    (tmp_path / "d.txt").write_text("The turbidity meter is calibrated before every survey.\n")
    idx = Index.open("e", tmp_path / "idx", create=True)
    update_index(idx, [tmp_path / "d.txt"])
    assert idx.store.get_meta("embed_model") and idx.store.get_meta("chunking")
    other = tmp_path / "another-384d-model"  # same dimension, another name: would rank wrong
    other.symlink_to(find_embedding_model())
    wrong = Index.open("e", tmp_path / "idx", embed_model=other)
    with pytest.raises(UsageError, match="embedded with"):
        wrong.search("turbidity", mode="dense")
    with pytest.raises(UsageError, match="embedded with"):
        update_index(wrong, [tmp_path / "d.txt"])
    assert wrong.search("turbidity", mode="bm25")  # BM25 needs no embeddings
    assert idx.search("turbidity", mode="dense")


@pytest.mark.slow
def test_an_index_killed_with_sigkill_at_random_points_stays_whole_and_resumes_to_a_clean_build(corpus):
    """The short version of `python -m lcdoc.eval.killtest` (run it with --kills 20 or more)."""
    from lcdoc.eval.killtest import run

    lines = []
    assert run([corpus], kills=2, seed=3, log=lines.append), lines
    assert lines[-1] == "resumed index equals a clean build"


@pytest.mark.slow
def test_ask_answers_from_the_good_file_and_names_the_one_it_could_not_read(tmp_path):
    (tmp_path / "good.txt").write_text("The harbour festival moves to the second weekend of August.\n")
    (tmp_path / "locked.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Encrypt 5 0 R >> garbage")
    r = run_cli("ask", "When is the harbour festival?", str(tmp_path / "good.txt"),
                str(tmp_path / "locked.pdf"), "--json", "--no-server",
                env={"LCDOC_INDEX_DIR": str(tmp_path / "idx")})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [os.path.basename(f["path"]) for f in out["failed"]] == ["locked.pdf"]
    assert "locked.pdf" in r.stderr and out["answer"].strip()
