"""Benchmarks run as commands; each returns rows that the CLI prints and records in docs/benchmarks.md."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SearchRow:
    """Latency of one FAISS index kind at one corpus size."""

    n_vectors: int
    kind: str
    build_s: float
    p50_ms: float
    p95_ms: float
    recall_at_10: float  # against exact flat search

    def as_dict(self) -> dict:
        return asdict(self)


def _synthetic(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    # Real sentence embeddings have a low intrinsic dimension (tens, not 384); isotropic noise
    # would be the worst case for any graph index and unlike any text corpus.
    basis = np.random.default_rng(12345).standard_normal((48, dim)).astype(np.float32)
    x = rng.standard_normal((n, 48)).astype(np.float32) @ basis
    x += 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bench_vector_search(sizes: list[int], kinds: tuple[str, ...] = ("flat", "hnsw"), dim: int = 384,
                        queries: int = 200, seed: int = 0) -> list[SearchRow]:
    """Single-query latency (p50/p95) of flat and HNSW inner-product search on synthetic vectors."""
    from lcdoc.index import vectors

    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        x = _synthetic(n, dim, rng)
        q = _synthetic(queries, dim, rng)
        ids = np.arange(n, dtype=np.int64)
        truth = None
        for kind in kinds:
            t0 = time.perf_counter()
            index = vectors.build_index([(ids, x)], dim, n, threshold=0 if kind == "hnsw" else n + 1)
            build = time.perf_counter() - t0
            lat = []
            found = []
            for i in range(queries):
                t = time.perf_counter()
                _, got = index.search(q[i : i + 1], 10)
                lat.append((time.perf_counter() - t) * 1000)
                found.append(got[0])
            found = np.array(found)
            if kind == "flat":
                truth = found
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])) \
                if truth is not None else float("nan")
            rows.append(SearchRow(n, kind, build, float(np.percentile(lat, 50)),
                                  float(np.percentile(lat, 95)), recall))
            del index
        del x
    return rows


def machine() -> str:
    """A one-line description of where a benchmark ran."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


@dataclass(frozen=True)
class IndexRow:
    """One indexing run: what was read, how fast, and text extraction alone, serial vs parallel."""

    files: int
    pages: int
    chunks: int
    tokens: int
    seconds: float
    pages_per_s: float
    chunks_per_s: float
    workers: int
    extract_serial_s: float
    extract_parallel_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def bench_indexing(paths: list[str], work: str, embed_model=None,
                   workers: int | None = None) -> IndexRow:
    """Index `paths` into a fresh index under `work`; time extraction with 1 and N processes first."""
    import os
    from pathlib import Path

    from lcdoc.qa.needles import default_haystack
    from lcdoc.index import Index, update_index
    from lcdoc.index.build import load_all
    from lcdoc.ingest import walk_paths

    root = Path(work)
    root.mkdir(parents=True, exist_ok=True)
    if not paths:  # the bundled haystack, as four text files
        text = default_haystack(400_000)
        step = len(text) // 4
        paths = []
        for i in range(4):
            f = root / f"haystack-{i}.txt"
            f.write_text(text[i * step:(i + 1) * step])
            paths.append(str(f))
    workers = workers or os.cpu_count() or 1
    files, _ = walk_paths(paths, (), ())
    timed = {}
    for n in (1, workers):  # side by side in one run, serial first
        t0 = time.perf_counter()
        for _ in load_all(list(files), n):
            pass
        timed[n] = time.perf_counter() - t0
    index = Index.open(str(root / "index"), create=True, embed_model=embed_model)
    report = update_index(index, paths, workers=workers)
    secs = max(report.seconds, 1e-9)
    return IndexRow(report.indexed, report.pages, report.chunks, report.tokens, report.seconds,
                    report.pages / secs, report.chunks / secs, workers, timed[1], timed[workers])
