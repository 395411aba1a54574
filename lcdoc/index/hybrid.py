"""Fusion of BM25 and dense results (a weighted sum of their scaled scores), and the Hit that
search returns."""

from __future__ import annotations

from dataclasses import dataclass

# BM25's share of the fused score; the dense retriever has the rest. A convex combination of
# scaled scores (Bruch et al., 2023) rather than reciprocal ranks: it keeps how far apart two
# candidates are, which ranks throw away. 0.7 was chosen on planted-fact queries of three seeds and
# checked on three others and another manual, where reciprocal-rank fusion (k = 60) ranked below
# BM25 alone (docs/benchmarks.md, "Fusion").
BM25_WEIGHT = 0.7


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its citation and how each retriever ranked it."""

    chunk_id: int
    path: str
    ordinal: int
    heading: str
    text: str
    start: int
    end: int
    page_start: int | None
    page_end: int | None
    n_tokens: int
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None

    @property
    def page(self) -> int | None:
        return self.page_start

    def as_json(self) -> dict:
        """One result of `lcdoc search --json`."""
        return {"path": self.path, "page": self.page, "page_end": self.page_end,
                "heading": self.heading, "text": self.text, "score": round(self.score, 6),
                "bm25_rank": self.bm25_rank, "dense_rank": self.dense_rank}

    @classmethod
    def from_json(cls, d: dict) -> "Hit":
        return cls(-1, d["path"], -1, d["heading"], d["text"], -1, -1, d["page"], d["page_end"],
                   0, d["score"], d.get("bm25_rank"), d.get("dense_rank"))

    @property
    def citation(self) -> str:
        parts = [self.path]
        if self.page_start is not None:
            parts.append(f"p. {self.page_start}" if self.page_start == self.page_end
                         else f"pp. {self.page_start}-{self.page_end}")
        if self.heading:
            parts.append(f"§ {self.heading}")
        return ", ".join(parts)


def _scaled(ranked: list[tuple[int, float]]) -> dict[int, float]:
    """Scores scaled to [0, 1] over the list (min-max): BM25 and cosine become comparable."""
    if not ranked:
        return {}
    hi, lo = max(s for _, s in ranked), min(s for _, s in ranked)
    if hi <= lo:
        return {i: 1.0 for i, _ in ranked}
    return {i: (s - lo) / (hi - lo) for i, s in ranked}


def fuse(bm25: list[tuple[int, float]], dense: list[tuple[int, float]],
         bm25_weight: float = BM25_WEIGHT) -> list[tuple[int, float]]:
    """Fused (id, score) best first: w x scaled BM25 + (1 - w) x scaled dense; a chunk missing
    from one list scores 0 there."""
    b, d = _scaled(bm25), _scaled(dense)
    scores = {i: bm25_weight * b.get(i, 0.0) + (1 - bm25_weight) * d.get(i, 0.0)
              for i in b.keys() | d.keys()}
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
