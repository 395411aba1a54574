"""lcdoc against LlamaIndex's standard pipeline on the same corpus and embedding model, in one run.

LlamaIndex is not a dependency of lcdoc: run this with the Python of an environment that has it,
e.g. `python -m venv --system-site-packages /tmp/li && /tmp/li/bin/pip install llama-index-core
llama-index-embeddings-huggingface && /tmp/li/bin/python -m lcdoc.eval.peer PATH...`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def _lcdoc(docs_dir: Path, work: Path, facts, precision: str = "fp32") -> dict:
    import shutil

    from lcdoc.index import Index, update_index

    folder = work / f"lcdoc-index-{precision}"
    shutil.rmtree(folder, ignore_errors=True)
    idx = Index.open(str(folder), create=True, embed_precision=precision)
    idx.embedder()  # model load is not indexing
    t0 = time.perf_counter()
    update_index(idx, [docs_dir])
    index_s = time.perf_counter() - t0
    lat, found = [], 0
    for q, _a, fact in facts:
        t = time.perf_counter()
        hits = idx.search(q, k=5)
        lat.append(time.perf_counter() - t)
        found += any(fact in h.text for h in hits)
    return {"index_s": index_s, "query_p50_ms": statistics.median(lat) * 1000,
            "recall_at_5": found / len(facts), "chunks": idx.store.counts()["chunks"]}


def _llamaindex(docs_dir: Path, facts) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from lcdoc.models import find_embedding_model

    Settings.embed_model = HuggingFaceEmbedding(model_name=str(find_embedding_model()))
    Settings.llm = None
    t0 = time.perf_counter()
    docs = SimpleDirectoryReader(str(docs_dir)).load_data()
    index = VectorStoreIndex.from_documents(docs)
    index_s = time.perf_counter() - t0
    retriever = index.as_retriever(similarity_top_k=5)
    lat, found = [], 0
    for q, _a, fact in facts:
        t = time.perf_counter()
        nodes = retriever.retrieve(q)
        lat.append(time.perf_counter() - t)
        found += any(fact in n.node.get_content() for n in nodes)
    return {"index_s": index_s, "query_p50_ms": statistics.median(lat) * 1000,
            "recall_at_5": found / len(facts), "chunks": len(index.docstore.docs)}


def main(argv: list[str] | None = None) -> None:
    from lcdoc.eval.bench import machine
    from lcdoc.eval.retrieval import plant_facts

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--facts", type=int, default=24)
    ap.add_argument("--work", default="peer-work")
    ap.add_argument("--precision", default="fp32,int8", help="lcdoc embedding precisions to run")
    a = ap.parse_args(argv)
    work = Path(a.work)
    facts = plant_facts(a.paths, work / "docs", a.facts)
    runs = {p: _lcdoc(work / "docs", work, facts, p) for p in a.precision.split(",")}
    li = _llamaindex(work / "docs", facts)
    print(f"machine: {machine()}")
    print("| pipeline | chunks | index s | query p50 | recall@5 |\n|---|---|---|---|---|")
    rows = [(f"lcdoc (hybrid, 256-token chunks, ONNX {p})", r) for p, r in runs.items()]
    for name, r in rows + [("LlamaIndex VectorStoreIndex (defaults)", li)]:
        print(f"| {name} | {r['chunks']} | {r['index_s']:.1f} | {r['query_p50_ms']:.1f} ms | "
              f"{r['recall_at_5']:.3f} |")
    for p, lc in runs.items():
        print(f"\nratios lcdoc {p}/LlamaIndex: index time {lc['index_s'] / li['index_s']:.2f}, "
              f"query p50 {lc['query_p50_ms'] / li['query_p50_ms']:.2f}, recall@5 "
              f"{lc['recall_at_5'] / max(li['recall_at_5'], 1e-9):.2f}")
    print(json.dumps({"lcdoc": runs, "llamaindex": li}))


if __name__ == "__main__":
    main()
