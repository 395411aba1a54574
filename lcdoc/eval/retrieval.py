"""Retrieval recall on planted facts: recall@1/5/10 and MRR for BM25 alone, dense alone and fused."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

# (fact, question, answer): questions are paraphrases, sharing only some words with the fact, so
# lexical and semantic retrieval each have something to do.
TEMPLATES = [
    ("The {c} depot keeps its spare keys in a blue tin under the stairs.",
     "Where are the extra keys for the {c} warehouse stored?", "blue tin"),
    ("Inspections of the {c} dam happen every {n} days, according to the engineers.",
     "How often is the {c} reservoir wall checked?", "every {n} days"),
    ("The {c} choir was founded by a retired pilot named {p}.",
     "Who started the singing group in {c}?", "{p}"),
    ("In {c}, the ferry ticket costs {n} crowns for adults.",
     "What is the adult boat fare in {c}?", "{n} crowns"),
    ("The {c} observatory telescope has a mirror {n} centimetres wide.",
     "How large is the mirror of the telescope at {c}?", "{n} centimetres"),
    ("Bread in {c} is baked with rye flour from the {p} mill.",
     "Which mill supplies the rye used by {c} bakers?", "{p} mill"),
]
CITIES = ["Tromso", "Valparaiso", "Hobart", "Windhoek", "Ushuaia", "Reykjavik", "Nuuk", "Arequipa",
          "Tartu", "Kiruna", "Dunedin", "Mopti", "Bodo", "Galway", "Oamaru", "Paro"]
PEOPLE = ["Ingrid Solberg", "Tomas Vaillant", "Aiko Brandt", "Mateo Quispe", "Lena Hartvig",
          "Oskar Nygaard", "Priya Lindqvist", "Jonas Ekdahl"]


@dataclass(frozen=True)
class RecallRow:
    mode: str
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr: float
    queries: int
    precision: str = ""


def plant_facts(paths: list[str], out_dir: Path, n_facts: int, seed: int = 0,
                on_failure=None):
    """Copies of the documents (as text) with n facts planted at random paragraph boundaries."""
    from lcdoc.ingest import read_documents

    rng = random.Random(seed)
    docs, failed = read_documents(paths)
    for x in failed:
        if on_failure:
            on_failure(x.path, x.reason)
    if not docs:
        from lcdoc.qa.needles import default_haystack

        from lcdoc.ingest import Document

        docs = [Document("default-haystack.txt", default_haystack(60_000, seed), "text", "")]
    paras = [d.text.split("\n\n") for d in docs]
    facts = []
    cities = rng.sample(CITIES, min(n_facts, len(CITIES)))
    for i in range(n_facts):
        fact, q, ans = TEMPLATES[i % len(TEMPLATES)]
        v = {"c": cities[i % len(cities)] + ("" if i < len(cities) else f" {i}"),
             "n": str(rng.randint(12, 980)), "p": rng.choice(PEOPLE)}
        d = rng.randrange(len(docs))
        k = rng.randrange(len(paras[d]) + 1)
        paras[d].insert(k, fact.format(**v))
        facts.append((q.format(**v), ans.format(**v), fact.format(**v)))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for i, (d, p) in enumerate(zip(docs, paras)):
        (out_dir / f"{i:03d}-{Path(d.path).name}.txt").write_text("\n\n".join(p))
    return facts


def evaluate(index, facts, ks=(1, 5, 10)) -> list[RecallRow]:
    """For each retriever, where does the first chunk containing the fact rank?"""
    rows = []
    precision = index.embed_precision()
    for mode in ("bm25", "dense", "hybrid"):
        ranks = []
        for q, _ans, fact in facts:
            hits = index.search(q, k=max(ks), mode=mode)
            rank = next((i for i, h in enumerate(hits, 1) if fact in h.text), None)
            ranks.append(rank)
        n = len(ranks)
        rows.append(RecallRow(
            mode,
            *(sum(1 for r in ranks if r is not None and r <= k) / n for k in ks),
            sum(1 / r for r in ranks if r is not None) / n, n, precision))
    return rows


SCRATCH_MARK = ".lcdoc-scratch"


def scratch_folder(work: Path) -> Path:
    """work/lcdoc-recall, marked as lcdoc's own: the only folder this evaluation ever empties, so
    `--work .` never touches a user's ./docs."""
    folder = work / "lcdoc-recall"
    if folder.exists() and not (folder / SCRATCH_MARK).exists():
        from lcdoc.errors import UsageError

        raise UsageError(f"{folder} exists and is not lcdoc's scratch folder: choose another --work")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCRATCH_MARK).touch()
    return folder


def run_recall(paths: list[str], work: Path, n_facts: int = 24, seed: int = 0,
               on_failure=None, precisions: tuple[str | None, ...] = (None,),
               seeds: int = 1) -> list[RecallRow]:
    """Plant facts in copies of the documents, index them (once per embedding precision, side
    by side on the same facts), measure each retriever; with several seeds, each plants a new
    set of facts and the queries of all are pooled (a difference of one query matters less)."""
    pooled: dict[tuple[str, str], list[RecallRow]] = {}
    for s in range(seed, seed + seeds):
        for row in _recall_once(paths, work, n_facts, s, on_failure, precisions):
            pooled.setdefault((row.mode, row.precision), []).append(row)
    return [_pool(rows) for rows in pooled.values()]


def _pool(rows: list[RecallRow]) -> RecallRow:
    n = sum(r.queries for r in rows)

    def mean(attr: str) -> float:
        return sum(getattr(r, attr) * r.queries for r in rows) / n

    return RecallRow(rows[0].mode, mean("recall_at_1"), mean("recall_at_5"), mean("recall_at_10"),
                     mean("mrr"), n, rows[0].precision)


def _recall_once(paths: list[str], work: Path, n_facts: int, seed: int, on_failure,
                 precisions: tuple[str | None, ...]) -> list[RecallRow]:
    from lcdoc.index import Index, update_index

    scratch = scratch_folder(work)
    facts = plant_facts(paths, scratch / "docs", n_facts, seed, on_failure)
    rows = []
    for precision in precisions:
        idx_dir = scratch / f"index-{precision or 'default'}"
        if idx_dir.exists():
            shutil.rmtree(idx_dir)
        with Index.open(str(idx_dir), create=True, allow_path=True, embed_precision=precision) as idx:
            update_index(idx, [scratch / "docs"])
            rows += evaluate(idx, facts)
    return rows
