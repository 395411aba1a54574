"""Per-query choice between stuffing whole documents and hybrid retrieval, with the reasons.

Stuff when the candidate documents fit the context budget (the model then sees everything, in
order); retrieve when they do not, or when the corpus is an index far larger than the context.
Questions that need the whole document (summaries, comparisons, "list all") lean to stuffing and,
when nothing fits, to a map-reduce over the document rather than a handful of passages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODES = ("auto", "stuff", "rag", "hybrid")

WHOLE = re.compile(
    r"\b(summari[sz]e|summary|summaries|overview|outline|gist|tl;?dr|compare|comparison|contrast|"
    r"differences?|list (all|every|each)|all the|every|main (points|ideas|themes|topics)|"
    r"key (points|findings|takeaways)|what is this (document|file|report) about)\b", re.I)


def needs_whole(question: str) -> bool:
    """A question whose relevant part cannot be known ahead: it needs the whole document."""
    return bool(WHOLE.search(question))


@dataclass(frozen=True)
class Route:
    """The strategy chosen for one question, and why."""

    route: str  # stuff, rag, hybrid, map-reduce
    budget: int  # tokens available for documents in the context
    doc_tokens: int | None  # size of the candidate documents, in the model's tokens (None: unknown)
    reasons: tuple[str, ...]


def context_budget(n_ctx: int, prompt_overhead: int, answer_tokens: int) -> int:
    """Tokens left for documents: the context minus the instructions and question, minus the answer."""
    return max(0, n_ctx - prompt_overhead - answer_tokens)


def default_stuff_limit(n_ctx_train: int) -> int:
    """Uncalibrated, stuff up to half the native context: models hold up far less than their
    window (RULER), and the packaged SmolLM2 lost to retrieval past ~4K of its 8K
    (docs/benchmarks.md). `lcdoc calibrate` replaces this with a measurement."""
    return n_ctx_train // 2


def choose_route(
    question: str,
    budget: int,
    doc_tokens: int | None,
    index_tokens: int | None = None,
    mode: str = "auto",
    stuff_limit: int | None = None,
    limit_reason: str = "",
) -> Route:
    """Route for a question over direct documents (doc_tokens) and/or an index (index_tokens).
    stuff_limit: the most tokens this model reads reliably (calibrated, or the default); auto
    stuffs only up to it, even where the context holds more."""
    whole = needs_whole(question)
    reasons = [f"context budget for documents: {budget} tokens"]
    budget_fit = budget  # what auto stuffs: the context's room, or less where the model reads less
    if stuff_limit is not None and mode == "auto":
        reasons.append(limit_reason or f"stuffing up to {stuff_limit} tokens")
        budget_fit = min(budget, stuff_limit)
    if doc_tokens is not None:
        reasons.append(f"documents given: {doc_tokens} tokens")
    if index_tokens is not None:
        reasons.append(f"index: about {index_tokens} tokens")
    if whole:
        reasons.append("the question needs the whole document (summary/comparison/list)")
    if mode != "auto":
        if mode == "hybrid" and (doc_tokens is None or index_tokens is None):
            reasons.append("--mode hybrid needs both files and an index; using rag over what was given")
            return Route("rag", budget, doc_tokens, tuple(reasons + ["mode rag"]))
        return Route(mode, budget, doc_tokens, tuple(reasons + [f"--mode {mode} requested"]))

    if doc_tokens is not None and index_tokens is not None:
        if doc_tokens <= budget_fit * 0.7:
            return Route("hybrid", budget, doc_tokens, tuple(reasons + [
                "the named documents fit in 70% of the budget: stuffed whole, the index fills "
                "the rest by retrieval"]))
        return Route("rag", budget, doc_tokens, tuple(reasons + [
            "the named documents do not leave room for the index: retrieval over both"]))
    total = doc_tokens if doc_tokens is not None else index_tokens
    if total is not None and total <= budget_fit:
        return Route("stuff", budget, total, tuple(reasons + [
            "everything fits the context: stuffed whole, in document order"]))
    if total is not None and total <= budget and not whole:
        return Route("rag", budget, total, tuple(reasons + [
            f"fits the context but exceeds the {budget_fit} tokens this model reads reliably: "
            f"hybrid retrieval (BM25 + dense) gives it the best passages instead"]))
    if whole:
        return Route("map-reduce", budget_fit, total, tuple(reasons + [
            f"larger than the {budget_fit} tokens the model reads at once and the question needs "
            f"all of it: map-reduce over the document in parts of that size"]))
    return Route("rag", budget, total, tuple(reasons + [
        "larger than the context: hybrid retrieval (BM25 + dense) fills the budget with the best "
        "passages"]))
