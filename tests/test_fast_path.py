"""The torch-free query path: the ONNX export against PyTorch, its cache, the imports a search
pays for, and re-indexing that does not read unchanged files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcdoc.index import Index, update_index

pytestmark = pytest.mark.slow

TEXTS = [
    "Filters at the pumping station are replaced every six weeks; the logs stay in the control room.",
    "The orchard lost most of its apples to a late frost, but the pears were unaffected.",
    "Road repairs on the northern bridge wait until the river level drops.",
    "Children's reading attendance doubled after the carpentry workshop delivered new shelves.",
    "The committee found the quarterly accounts consistent with the ledger.",
    "A temporary footpath runs along the old railway line during the bridge works.",
    "The cider press ran for three weeks in October.",
    "Regional audits in spring raised travel costs.",
] * 3 + [f"Section {i}: the gauge on tank {i} reads {i * 7} litres at dawn." for i in range(30)]
QUERIES = ["When are the filters changed?", "What happened to the apples?",
           "Why was the bridge repair delayed?", "How much does tank 12 hold?",
           "What did the committee conclude about the accounts?"]


@pytest.fixture(scope="module")
def torch_vectors():
    from lcdoc.index.embed import TorchEmbedder

    emb = TorchEmbedder()
    return emb.embed(TEXTS), emb.embed(QUERIES)


def ranking(docs: np.ndarray, queries: np.ndarray, k: int = 5) -> list[list[int]]:
    return [list(np.argsort(-(docs @ q), kind="stable")[:k]) for q in queries]


def test_fp32_export_ranks_as_pytorch_does(torch_vectors):
    from lcdoc.index.embed import OnnxEmbedder

    t_docs, t_q = torch_vectors
    emb = OnnxEmbedder(precision="fp32")
    o_docs, o_q = emb.embed(TEXTS), emb.embed(QUERIES)
    assert o_docs.shape == t_docs.shape and o_docs.dtype == np.float32
    assert float(np.min(np.sum(o_docs * t_docs, axis=1))) > 0.9999
    assert np.allclose(np.linalg.norm(o_docs, axis=1), 1, atol=1e-5)
    # Same order wherever PyTorch's scores are not within float noise of each other.
    for q, o_rank, t_rank in zip(t_q, ranking(t_docs, o_q), ranking(t_docs, t_q)):
        gaps = np.diff(-(t_docs @ q)[t_rank])
        if np.all(gaps > 1e-4):
            assert o_rank == t_rank


def test_int8_export_stays_close_to_fp32(torch_vectors):
    from lcdoc.index.embed import OnnxEmbedder

    t_docs, t_q = torch_vectors
    emb = OnnxEmbedder(precision="int8")
    cos = np.sum(emb.embed(TEXTS) * t_docs, axis=1)
    # Down projections kept at fp32 (onnx_export._quantise): 0.993 mean, 0.984 min without.
    assert cos.mean() > 0.995 and cos.min() > 0.99, (cos.mean(), cos.min())
    top1 = [r[0] for r in ranking(emb.embed(TEXTS), emb.embed(QUERIES))]
    assert top1 == [r[0] for r in ranking(t_docs, t_q)]


def test_export_is_cached_per_model_and_rebuilt_when_missing_or_partial(tmp_path, monkeypatch):
    from lcdoc.index import onnx_export
    from lcdoc.index.embed import OnnxEmbedder, resolve_embedding_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = resolve_embedding_model(None)
    out = onnx_export.export_dir(folder)
    assert str(out).startswith(str(tmp_path)) and not out.exists()
    first = OnnxEmbedder(precision="int8").embed(QUERIES[:2])
    assert onnx_export.is_complete(out)
    assert json.loads((out / "export.json").read_text())["pooling"] == "mean"
    (out / "int8.onnx").unlink()  # a partial folder (a deleted file, a killed export)
    again = OnnxEmbedder(precision="int8").embed(QUERIES[:2])
    assert onnx_export.is_complete(out) and np.allclose(first, again, atol=1e-6)
    shutil.rmtree(out)
    OnnxEmbedder(precision="fp32")
    assert onnx_export.is_complete(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_precision_is_recorded_and_kept_by_later_updates(corpus, tmp_path):
    idx = Index.open(str(tmp_path / "p"), create=True, embed_precision="fp32")
    update_index(idx, [corpus / "guide.md"])
    assert idx.store.get_meta("embed_precision") == "fp32"
    idx.close()
    again = Index.open(str(tmp_path / "p"), embed_precision="int8")  # asked for, but vectors exist
    assert again.embed_precision() == "fp32"
    again.close()


HEAVY = ("torch", "transformers", "sentence_transformers", "faiss")
PROBE = """
import json, os, sys
from lcdoc.cli import main

def report(code):
    print(json.dumps({"exit": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)

leave = os._exit  # after a model was loaded, the CLI leaves through os._exit (no teardown)
os._exit = lambda code: (report(code), sys.stderr.flush(), leave(code))
try:
    main()
except SystemExit as e:
    report(e.code)
"""


def run_probe(args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), *args], capture_output=True,
                       text=True, env=env, timeout=120)
    got = json.loads(p.stderr.strip().splitlines()[-1])
    if got["exit"]:
        got["stderr"] = p.stderr[-2000:]
    return got


@pytest.fixture(scope="module")
def small_index(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    env = {**os.environ, "LCDOC_INDEX_DIR": str(root), "LCDOC_SOCKET": str(root / "none.sock")}
    exe = shutil.which("lcdoc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    subprocess.run([exe, "index", str(corpus), "--index", "fast"], env=env, check=True,
                   capture_output=True)
    return env


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_imports_no_torch_and_no_faiss_for_a_flat_index(small_index, mode):
    got = run_probe(["search", "When are the pump filters replaced?", "--index", "fast",
                     "--mode", mode, "--json"], small_index)
    assert got == {"exit": 0, "heavy": []}


def test_ask_retrieval_imports_no_torch(small_index):
    env = {**small_index, "LCDOC_ANSWER_TOKENS": "4"}
    got = run_probe(["ask", "When are the pump filters replaced?", "--index", "fast",
                     "--mode", "rag", "--json", "--no-server"], env)
    assert got == {"exit": 0, "heavy": []}


def test_unchanged_files_are_not_read_again(corpus, tmp_path, monkeypatch):
    from lcdoc.index import build

    folder = tmp_path / "docs"
    shutil.copytree(corpus, folder)
    idx = Index.open(str(tmp_path / "i"), create=True)
    first = update_index(idx, [folder])
    hashed: list[Path] = []
    real = build._sha256
    monkeypatch.setattr(build, "_sha256", lambda p: hashed.append(Path(p)) or real(p))
    again = update_index(idx, [folder])
    assert again.indexed == 0 and again.unchanged == first.indexed and hashed == []
    md = folder / "guide.md"
    os.utime(md, (md.stat().st_atime, md.stat().st_mtime + 10))  # touched, same content
    touched = update_index(idx, [folder])
    assert touched.indexed == 0 and hashed == [md]
    assert update_index(idx, [folder]).unchanged == first.indexed and hashed == [md]  # stat kept
    md.write_text(md.read_text().replace("a", "o"))  # same size, new content
    changed = update_index(idx, [folder])
    assert changed.indexed == 1
    idx.close()


def test_a_few_named_files_are_embedded_without_starting_pytorch(tmp_path, monkeypatch):
    """On a GPU host, fp32 indexing starts PyTorch on CUDA (~5 s); the text of a few named
    files is embedded by the CPU export instead, and a large one still asks for the indexer."""
    from lcdoc.index import build, embed, index_documents
    from lcdoc.ingest import Document

    monkeypatch.setattr(embed, "gpu_present", lambda: True)
    asked = []
    real = Index.embedder

    class WouldStartPyTorch(Exception):
        pass

    def spy(self, for_indexing=False):
        asked.append(for_indexing)
        if for_indexing:  # this machine has no GPU to start PyTorch on: stop here
            raise WouldStartPyTorch
        return real(self, for_indexing=False)

    monkeypatch.setattr(Index, "embedder", spy)
    small = Document("note.txt", TEXTS[0], "text", "a" * 64)
    idx = Index.open(str(tmp_path / "small"), create=True)
    index_documents(idx, [small])
    assert asked == [False] and idx.embed_precision() == "fp32"  # a GPU host's default
    assert idx.search("When are the filters changed?", k=1)[0].path.endswith("note.txt")
    big = Document("big.txt", "\n\n".join(TEXTS) * (build.SMALL_TEXT_CHARS // 2000), "text", "b" * 64)
    with pytest.raises(WouldStartPyTorch):
        index_documents(Index.open(str(tmp_path / "big"), create=True), [big])
    assert asked[-1] is True
