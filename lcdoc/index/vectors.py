"""The FAISS side of an index: normalised embeddings keyed by chunk id, flat or HNSW by size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

# Flat inner-product search is exact and needs no build; its latency grows linearly with the corpus.
# docs/benchmarks.md ("Flat or HNSW") measured, on the 2-core machine, a flat 384-d query at
# 5.9 ms p50 for 100K vectors, 11.3 ms for 200K and 55 ms for 400K; HNSW answers in ~0.5 ms at
# recall@10 of 0.90 at 200K but costs ~54 s to build there. 200K is where flat search passes
# 10 ms and the build cost is still a minute: past it, HNSW.
HNSW_THRESHOLD = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96


def choose_kind(n: int, threshold: int = HNSW_THRESHOLD) -> str:
    """'flat' for small corpora, 'hnsw' past the size where flat search gets slow."""
    return "hnsw" if n >= threshold else "flat"


def build_index(batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, n_total: int,
                threshold: int = HNSW_THRESHOLD):
    """A FAISS index (ids = chunk ids) over all stored embeddings."""
    import faiss

    if choose_kind(n_total, threshold) == "hnsw":
        base = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        base.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        base = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(base)
    for ids, vecs in batches:
        index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
    return index


def index_kind(index) -> str:
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return "hnsw" if isinstance(base, faiss.IndexHNSW) else "flat"


def save_index(index, path: Path) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    import faiss

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def load_index(path: Path):
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    base = faiss.downcast_index(index.index)
    if isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search(index, query_vecs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """(chunk id, cosine similarity) per query, best first."""
    if index.ntotal == 0:
        return [[] for _ in range(len(query_vecs))]
    scores, ids = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), min(k, index.ntotal))
    return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]
