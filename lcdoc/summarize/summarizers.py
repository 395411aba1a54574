"""Who writes the summaries: this process's engine, one document at a time or side by side.

A summarizer takes documents and reports each one's Summary (or its problem) as it finishes;
lcdoc.cluster.RaySummarizer is the same interface over a Ray cluster's workers.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Protocol

from lcdoc.errors import LcdocError
from lcdoc.events import debug_mark
from lcdoc.ingest import Document
from lcdoc.summarize.document import (STYLES, Summary, answer_tokens, document_budget, labelled,
                                      request, summarize_document)

Done = Callable[[Document, "Summary | str"], None]
# Documents handed to the side-by-side decoder at once, in multiples of --parallel: enough that a
# finished stream takes the next document at once (continuous refill), few enough to hold loaded.
BATCH_GROUPS = 8


class Summarizer(Protocol):
    """Summaries of documents, each reported to `done` as it finishes (a str: its problem)."""

    model_id: str  # with n_ctx, what a finished summary's cache key records
    n_ctx: int

    def run(self, docs: Iterable[Document], done: Done) -> None: ...


class LocalSummarizer:
    """This process's engine: documents that fit one sequence's context are decoded `parallel`
    at a time in one llama.cpp context; longer ones run their map steps side by side."""

    def __init__(self, engine, style: str = "brief", max_words: int = 150,
                 prompt: str | None = None, parallel: int = 1,
                 on_level: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.model_id, self.n_ctx = engine.model_id, engine.n_ctx
        self.style, self.max_words, self.prompt = style, max_words, prompt
        self.parallel = max(1, min(parallel, engine.plan.n_seq))  # what the context was planned for
        self.on_level = on_level
        self.instruction = prompt or STYLES[style].format(w=max_words)

    def run(self, docs: Iterable[Document], done: Done) -> None:
        decoder = None
        if self.parallel > 1:
            from lcdoc.engine.parallel import ParallelDecoder

            decoder = ParallelDecoder(self.engine, self.parallel)
        per_seq = document_budget(self.engine, self.instruction, self.max_words)
        # The prompt without a document, in tokens: what a document's prompt holds beyond it is
        # the document's count, so each document is tokenized once (2,500 tokens take ~5 ms).
        bare = len(self._request("").prompt) if decoder else 0
        batch: list[tuple[Document, int, Any]] = []
        try:
            for doc in docs:
                if decoder is not None:
                    req = self._request(labelled(doc, 0, len(doc.text)))
                    n_tok = len(req.prompt) - bare
                    if n_tok <= per_seq:
                        batch.append((doc, n_tok, req))
                        if len(batch) == BATCH_GROUPS * self.parallel:
                            self._side_by_side(batch, decoder, done)
                            batch = []
                        continue
                done(doc, self._one(doc, decoder))
            self._side_by_side(batch, decoder, done)
        finally:
            if decoder is not None:
                decoder.close()

    def _request(self, text: str):
        return request(self.engine, self.instruction, text, self.instruction,
                       answer_tokens(self.max_words))

    def _one(self, doc: Document, decoder) -> Summary | str:
        try:
            return summarize_document(doc, self.engine, self.style, self.max_words, self.prompt,
                                      self.on_level, decoder)
        except Exception as e:  # one document's failure is named; the others go on
            return str(e) if isinstance(e, LcdocError) else f"{type(e).__name__}: {e}"

    def _side_by_side(self, batch: list[tuple[Document, int, Any]], decoder, done: Done) -> None:
        """Stuffed summaries of documents that each fit a sequence, reported as each finishes
        (a kill loses only those in flight); each is charged the time since the last finished."""
        from lcdoc.engine.parallel import run_many

        if not batch:
            return
        debug_mark(f"{len(batch)} documents side by side")
        last = time.perf_counter()

        def finished(i: int, text: str) -> None:
            nonlocal last
            doc, n_tok, _ = batch[i]
            now = time.perf_counter()
            seconds, last = now - last, now
            done(doc, Summary(doc.path, text, "stuff", 1, n_tok, seconds, 1, doc.sha256))

        run_many(self.engine, decoder, [r for _, _, r in batch], on_done=finished)
