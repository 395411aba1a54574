"""Several prompts decoded together: one llama.cpp context, one sequence per prompt, one batch per step.

Decoding is memory-bound: a step that advances four sequences reads the weights once, as a step
that advances one does. Summarising a folder therefore runs documents side by side rather than
one at a time. Each sequence has a cache stream of n_ctx cells in the Engine's context; a
finished sequence's stream goes to the next document at once (continuous refill), and its prompt
rides in the same decode calls as the other sequences' tokens.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lcdoc.engine.llm import repeat_start

# The same repetition penalty as Engine.complete (llama.cpp's rule: divide positive logits,
# multiply negative ones), over the same window, so batched and single answers agree in kind.
REPEAT_PENALTY = 1.1
REPEAT_LAST_N = 64
# Prompt tokens per side-by-side step, fixed, instead of all the batch has room for (for
# measuring: `LCDOC_PREFILL_CHUNK=64 lcdoc summarize ... --parallel 8`).
PREFILL_CHUNK_ENV = "LCDOC_PREFILL_CHUNK"


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int
    stops: tuple[str, ...] = ()


class ParallelDecoder:
    """Side-by-side decoding in the Engine's own context, planned for n_seq sequences.

    The sequences live in that context's cache (the planner counted n_seq x n_ctx cells), so no
    second context is ever created; each attends to its own cells only. Each step is one
    llama_decode for every active sequence; the repetition penalty and the greedy choice run on
    all their logits at once.
    """

    def __init__(self, engine, n_seq: int | None = None) -> None:
        import llama_cpp

        self.engine = engine
        self.n_seq = min(n_seq or engine.plan.n_seq, engine.plan.n_seq)
        if self.n_seq < 2:
            raise ValueError("the engine was planned for one sequence: create it with n_seq > 1")
        self.ctx = engine.llm._ctx
        self.n_ctx = engine.n_ctx
        self.n_batch = int(engine.llm.context_params.n_batch)
        self.vocab = engine.llm._model.vocab
        self.n_vocab = engine.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.fixed_chunk = int(os.environ.get(PREFILL_CHUNK_ENV) or 0)

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def fits(self, group: list[Request]) -> bool:
        # Up to n_ctx tokens per sequence, so n_seq of them always fit the n_seq * n_ctx cells.
        return len(group) <= self.n_seq and all(len(r.prompt) + r.max_tokens <= self.n_ctx
                                                for r in group)

    def _add(self, tok: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        i = b.n_tokens
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1

    def _decode(self) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self.ctx.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) in a parallel batch")

    def _output_logits(self, n_rows: int) -> np.ndarray:
        """The logits of this batch's output rows, in batch order, as one (rows, vocab) view."""
        import llama_cpp

        ptr = llama_cpp.llama_get_logits(self.ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_rows, self.n_vocab))

    def generate(self, group: list[Request]) -> list[str]:
        """Greedy answers to each request, decoded side by side."""
        if not self.fits(group):
            raise ValueError("group does not fit the parallel context")
        return self.run(group)

    def run(self, requests: list[Request],
            on_done: Callable[[int, str], None] | None = None) -> list[str]:
        """Greedy answers to every request, n_seq at a time with continuous refill: when one
        sequence finishes, the next request takes its stream at once, so no step waits for the
        longest answer of a group. on_done(index, text) is called as each one finishes.

        A new prompt is fed in the same llama_decode calls as the other sequences' next tokens
        (up to n_batch tokens a call), so they never wait a separate step for it."""
        import llama_cpp

        if any(not self.fits([r]) for r in requests):
            raise ValueError("a request does not fit one sequence's context")
        self.engine.forget_resident()  # the cells below are about to be overwritten
        mem = llama_cpp.llama_get_memory(self.ctx.ctx)
        llama_cpp.llama_memory_clear(mem, True)
        results = [""] * len(requests)
        pending = deque(range(len(requests)))
        free = list(range(self.n_seq - 1, -1, -1))
        live: dict[int, _Stream] = {}
        rows_of: list[int] = []  # the sequence of each output row of the last decode, in order
        while pending or live:
            # 1. Sample every sequence that has logits: its next token, or its end.
            if rows_of:
                rows = self._output_logits(len(rows_of))
                toks = self._greedy(rows, [live[q].history for q in rows_of])
                for q, tok in zip(rows_of, toks):
                    st = live[q]
                    if st.add(tok, self) or st.n_out >= requests[st.index].max_tokens:
                        results[st.index] = st.text.strip()
                        if on_done:
                            on_done(st.index, results[st.index])
                        del live[q]
                        free.append(q)
                    else:
                        st.next = tok
            # 2. Free streams take the next requests; their prompts are fed from the next step.
            while free and pending:
                q, i = free.pop(), pending.popleft()
                llama_cpp.llama_memory_seq_rm(mem, q, -1, -1)
                live[q] = _Stream(i, requests[i])
            if not live:
                break
            # 3. One llama_decode: a token for every decoding sequence, then prompt chunks.
            rows_of = self._fill_batch(live, self._chunk(live))
            self._decode()
        return results

    def _chunk(self, live: dict[int, _Stream]) -> int:
        """Prompt tokens this step may carry: all the batch has room for. Thin chunks spread over
        many steps were measured slower on an H100 (docs/benchmarks.md): a small chunk runs the
        matrix kernels at a fraction of their speed. LCDOC_PREFILL_CHUNK fixes the size, for
        measuring."""
        room = self.n_batch - sum(1 for st in live.values() if st.next is not None)
        return min(room, self.fixed_chunk) if self.fixed_chunk else room

    def _fill_batch(self, live: dict[int, _Stream], chunk: int) -> list[int]:
        """Batch this step's tokens; the sequences of the output rows, in batch order.

        Tokens go in sequence-id order: llama.cpp splits a batch over per-sequence cache streams
        only along increasing ids, so any other order costs extra passes over the weights."""
        take: dict[int, int] = {}
        for q, st in live.items():  # the room goes to prompts in the order they started
            if chunk <= 0:
                break
            if st.next is None and st.fed < len(st.prompt):
                take[q] = min(len(st.prompt) - st.fed, chunk)
                chunk -= take[q]
        self.batch.n_tokens = 0
        rows_of = []
        for q in sorted(live):
            st = live[q]
            if st.next is not None:
                self._add(st.next, st.pos, q, True)
                st.pos += 1
                st.next = None
                rows_of.append(q)
            elif q in take:
                end = st.fed + take[q]
                for j in range(st.fed, end):
                    self._add(st.prompt[j], j, q, j == len(st.prompt) - 1)
                st.fed = end
                if end == len(st.prompt):
                    rows_of.append(q)
        return rows_of

    @staticmethod
    def _greedy(logits: np.ndarray, recent: list[list[int]]) -> list[int]:
        """llama.cpp's repetition penalty (divide positive logits, multiply negative ones) over
        each row's last REPEAT_LAST_N tokens, then the argmax of every row at once."""
        for i, hist in enumerate(recent):
            idx = np.unique(np.asarray(hist[-REPEAT_LAST_N:], dtype=np.int64))
            if len(idx):
                vals = logits[i, idx]
                logits[i, idx] = np.where(vals > 0, vals / REPEAT_PENALTY, vals * REPEAT_PENALTY)
        return [int(t) for t in np.argmax(logits, axis=1)]


class _Stream:
    """One request in flight: its position, its answer so far, and what stops it."""

    def __init__(self, index: int, req: Request) -> None:
        self.index = index
        self.stops = req.stops
        self.prompt = req.prompt
        self.fed = 0  # prompt tokens already in the cache
        self.next: int | None = None  # the sampled token the next step feeds
        self.pos = len(req.prompt)
        self.history = list(req.prompt[-REPEAT_LAST_N:])
        self.n_out = 0
        self.raw = b""
        self.text = ""

    def add(self, tok: int, dec: ParallelDecoder) -> bool:
        """Take one token; True when the answer ends (end of generation, a stop string, a loop)."""
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(dec.vocab, tok):
            return True
        self.n_out += 1
        self.history.append(tok)
        self.raw += dec.engine.llm.detokenize([tok])
        try:
            self.text += self.raw.decode("utf-8")
            self.raw = b""
        except UnicodeDecodeError:  # a character split across tokens: wait for the rest
            if len(self.raw) <= 8:
                return False
            self.text += self.raw.decode("utf-8", errors="replace")
            self.raw = b""
        hit = min((i for i in (self.text.find(x) for x in self.stops if x) if i >= 0), default=-1)
        if hit < 0:
            hit = repeat_start(self.text)
        if hit >= 0:
            self.text = self.text[:hit]
            return True
        return False


def run_many(engine, decoder: ParallelDecoder | None, requests: list[Request],
             on_done: Callable[[int, str], None] | None = None) -> list[str]:
    """Answers in request order: side by side with continuous refill where a request fits one
    sequence's context, one by one otherwise (or without a decoder)."""
    results = [""] * len(requests)
    fits = [i for i, r in enumerate(requests) if decoder is not None and decoder.fits([r])]
    if fits:
        def done(k: int, text: str) -> None:
            results[fits[k]] = text
            if on_done:
                on_done(fits[k], text)

        decoder.run([requests[i] for i in fits], on_done=done)
    for i in sorted(set(range(len(requests))) - set(fits)):
        r = requests[i]
        c = engine.complete_tokens(r.prompt, [], max_tokens=r.max_tokens, stop=list(r.stops),
                                   cache_prefix=False)
        results[i] = c.text.strip()
        if on_done:
            on_done(i, results[i])
    return results
