"""Reciprocal-rank fusion of BM25 and dense results, and the Hit that search returns."""

from __future__ import annotations

from dataclasses import dataclass

# k = 60 is the constant of Cormack et al. (2009): it damps the weight of the very top ranks so
# that agreement between the two lists counts more than either list's first place.
RRF_K = 60


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


def rrf_fuse(ranked_lists: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fused (id, score) best first: score = sum over lists of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranked in ranked_lists:
        for rank, item in enumerate(ranked, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
