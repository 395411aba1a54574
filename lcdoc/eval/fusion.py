"""Fusion functions side by side on the same BM25 and dense rankings of planted-fact questions.

    python -m lcdoc.eval.fusion DOC... [--tune-seeds 0-2] [--check-seeds 3-5] [--facts 24]

Each seed plants new facts in copies of the documents and indexes them once; every fusion then
ranks the same two lists per question, so differences come from the fusion alone. Weights are
chosen on the tuning seeds and reported on the others, which they never saw.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Callable

from lcdoc.index.hybrid import BM25_WEIGHT, fuse

Ranked = list[tuple[int, float]]
Question = tuple[int, Ranked, Ranked, set[int]]  # seed, bm25, dense, chunks holding the fact


def rrf(bm25: Ranked, dense: Ranked, k: int = 60, bm25_weight: float = 1.0) -> Ranked:
    """Reciprocal-rank fusion (Cormack et al., 2009), BM25's ranks weighted: the former default."""
    scores: dict[int, float] = {}
    for w, ranked in ((bm25_weight, bm25), (1.0, dense)):
        for rank, (i, _) in enumerate(ranked, start=1):
            scores[i] = scores.get(i, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def collect(paths: list[str], work: Path, seeds: list[int], n_facts: int,
            depth: int = 50) -> list[Question]:
    """Both rankings of every planted-fact question, one fresh index per seed."""
    from lcdoc.eval.retrieval import plant_facts, scratch_folder
    from lcdoc.index import Index, update_index, vectors

    out = []
    for seed in seeds:
        scratch = scratch_folder(work)
        facts = plant_facts(paths, scratch / "docs", n_facts, seed)
        folder = scratch / "index-fusion"
        shutil.rmtree(folder, ignore_errors=True)
        with Index.open(str(folder), create=True, allow_path=True) as idx:
            update_index(idx, [scratch / "docs"])
            for q, _answer, fact in facts:
                bm25 = idx.store.bm25(q, depth)
                dense = [(int(i), float(s)) for i, s in
                         vectors.search(idx.faiss(), idx.embedder().embed([q]), depth)[0]]
                ids = [i for i, _ in bm25] + [i for i, _ in dense]
                rows = idx.store.chunk_rows(ids)
                out.append((seed, bm25, dense, {i for i in rows if fact in rows[i][3]}))
    return out


Fusion = Callable[[Ranked, Ranked], Ranked]


def score(fusion: Fusion, questions: list[Question]) -> tuple[float, ...]:
    """recall@1, @5, @10 and MRR of one fusion over the questions."""
    ranks = []
    for _seed, bm25, dense, good in questions:
        top = [i for i, _ in fusion(bm25, dense)[:10]]
        ranks.append(next((r for r, i in enumerate(top, 1) if i in good), None))
    n = len(ranks) or 1
    return (*(sum(1 for r in ranks if r and r <= k) / n for k in (1, 5, 10)),
            sum(1 / r for r in ranks if r) / n)


def fusions() -> dict[str, Fusion]:
    """The candidates: each list alone, reciprocal ranks (plain and weighted), scaled scores."""
    out: dict[str, Fusion] = {
        "bm25 alone": lambda b, d: b, "dense alone": lambda b, d: d,
        "rrf k=60 (before)": rrf}
    for w in (2.0, 3.0):
        for k in (10, 60):
            out[f"rrf k={k}, bm25 x{w:g}"] = lambda b, d, k=k, w=w: rrf(b, d, k, w)
    for w in (0.5, 0.6, 0.7, 0.8):
        label = f"scaled scores, bm25 {w}" + (" (default)" if w == BM25_WEIGHT else "")
        out[label] = lambda b, d, w=w: fuse(b, d, w)
    return out


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> None:
    from lcdoc.eval.bench import machine

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--facts", type=int, default=24)
    ap.add_argument("--tune-seeds", default="0-2")
    ap.add_argument("--check-seeds", default="3-5")
    ap.add_argument("--work", default="fusion-work")
    a = ap.parse_args(argv)
    tune, check = _seeds(a.tune_seeds), _seeds(a.check_seeds)
    qs = collect(a.paths, Path(a.work), tune + check, a.facts)
    print(f"machine: {machine()}")
    print(f"| fusion | tuning seeds {a.tune_seeds}: r@1 / r@5 / r@10 / MRR | "
          f"held-out seeds {a.check_seeds}: r@1 / r@5 / r@10 / MRR |\n|---|---|---|")
    for name, f in fusions().items():
        cols = [" / ".join(f"{x:.3f}" for x in score(f, [q for q in qs if q[0] in s]))
                for s in (tune, check)]
        print(f"| {name} | {cols[0]} | {cols[1]} |")
    print(f"\n{sum(q[0] in tune for q in qs)} tuning and {sum(q[0] in check for q in qs)} held-out "
          "questions")


if __name__ == "__main__":
    main()
