"""The vector side of an index: normalised embeddings keyed by chunk id, flat or HNSW by size.

Flat search is one matrix product, done with numpy from a memory-mapped file (FAISS's
IndexFlatIP computes the same, and importing FAISS costs a query more than the search); HNSW is
FAISS's, in its own file.
"""

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


class FlatVectors:
    """Exact inner-product search over a (memory-mapped) matrix, with FAISS's search signature."""

    def __init__(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.ids, self.vecs = ids, vecs

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self.vecs.T
        k = min(k, self.ntotal)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(scores, best, axis=1), self.ids[best]


SUFFIX = {"flat": ".npy", "hnsw": ".faiss"}


def vector_file(folder: Path, gen: int, kind: str) -> Path:
    return folder / f"vectors.{gen}{SUFFIX[kind]}"


def existing_file(folder: Path, gen: int) -> Path | None:
    """This generation's vector file, whichever kind it is."""
    for kind in SUFFIX:
        p = vector_file(folder, gen, kind)
        if p.exists():
            return p
    return None


def build_index(batches: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, n_total: int,
                threshold: int = HNSW_THRESHOLD):
    """A vector index (ids = chunk ids) over all stored embeddings: FlatVectors or FAISS HNSW."""
    if choose_kind(n_total, threshold) == "flat":
        ids, vecs = [np.zeros(0, np.int64)], [np.zeros((0, dim), np.float32)]
        for i, v in batches:
            ids.append(np.asarray(i, dtype=np.int64))
            vecs.append(np.asarray(v, dtype=np.float32))
        return FlatVectors(np.concatenate(ids), np.ascontiguousarray(np.vstack(vecs)))
    import faiss

    base = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    base.hnsw.efSearch = HNSW_EF_SEARCH
    index = faiss.IndexIDMap2(base)
    for ids, vecs in batches:
        index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
    return index


def index_kind(index) -> str:
    if isinstance(index, FlatVectors):
        return "flat"
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return "hnsw" if isinstance(base, faiss.IndexHNSW) else "flat"


def save_index(index, folder: Path, gen: int) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = vector_file(folder, gen, index_kind(index))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from lcdoc.private import opener, tighten

    try:
        if isinstance(index, FlatVectors):
            with open(tmp, "wb", opener=opener) as f:  # the ids, then the matrix: one file
                np.save(f, index.ids)
                np.save(f, index.vecs)
        else:
            import faiss

            faiss.write_index(index, str(tmp))
            tighten(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    return path


def _load_flat(path: Path) -> FlatVectors:
    with open(path, "rb") as f:
        ids = np.load(f)
        from numpy.lib import format as npy

        version = npy.read_magic(f)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran or dtype != np.float32 or len(shape) != 2 or shape[0] != len(ids):
        raise RuntimeError(f"{path}: not a vector file lcdoc wrote")
    vecs = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=shape) if shape[0] else \
        np.zeros(shape, np.float32)
    return FlatVectors(ids, vecs)


def load_index(path: Path):
    """A vector file as written by save_index; RuntimeError when it is not whole."""
    if path.suffix == ".npy":
        try:
            return _load_flat(path)
        except (ValueError, OSError, EOFError) as e:
            raise RuntimeError(f"{path}: {e}") from e
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
    if isinstance(index, FlatVectors):
        scores, ids = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), k)
        return [[(int(i), float(s)) for i, s in zip(r_i, r_s)] for r_i, r_s in zip(ids, scores)]
    scores, ids = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), min(k, index.ntotal))
    return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]
