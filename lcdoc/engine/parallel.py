"""Several prompts decoded together: one llama.cpp context, one sequence per prompt, one batch per step.

Decoding is memory-bound: a step that advances four sequences reads the weights once, as a step
that advances one does. Summarising a folder therefore runs documents side by side rather than
one at a time. Each sequence has a cache stream of n_ctx cells in the Engine's context; a
finished sequence's stream goes to the next document at once (continuous refill), and its prompt
rides in the same decode calls as the other sequences' tokens.

A step's work on the CPU leaves the GPU idle, so little of it stands between two decodes: the
penalty and greedy choice run on all rows at once in numpy, and the text of the tokens
(detokenizing, stop strings, loops) is worked out while the next step runs on the GPU. llama.cpp
can also choose inside its graph (backend sampling, LCDOC_SAMPLING=graph): same tokens, measured
no faster on an H200 (docs/benchmarks.md), so numpy stays the default.
"""

from __future__ import annotations

import ctypes
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
# Where the greedy choice is made: "host" (numpy over the logits, the default) or "graph" (a
# llama.cpp sampler chain inside the decode), for measuring and comparing.
SAMPLING_ENV = "LCDOC_SAMPLING"


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
    all their rows at once, in numpy (or in llama.cpp's graph).
    """

    def __init__(self, engine, n_seq: int | None = None, sampling: str | None = None) -> None:
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
        self._arrays = _BatchArrays(self.batch, self.n_batch)
        self.fixed_chunk = int(os.environ.get(PREFILL_CHUNK_ENV) or 0)
        self.out_at: list[int] = []
        if sampling not in (None, "graph", "host"):
            raise ValueError(f"sampling is 'graph' or 'host', not {sampling!r}")
        # like the other measuring settings, an unknown LCDOC_SAMPLING leaves the default
        env = os.environ.get(SAMPLING_ENV, "").strip().lower()
        self.sampling = sampling or ("graph" if env == "graph" else "host")

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            self._arrays.restore()
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def fits(self, group: list[Request]) -> bool:
        # Up to n_ctx tokens per sequence, so n_seq of them always fit the n_seq * n_ctx cells.
        return len(group) <= self.n_seq and all(len(r.prompt) + r.max_tokens <= self.n_ctx
                                                for r in group)

    def _clear(self) -> None:
        self.batch.n_tokens = 0
        self.out_at = []  # each output row's index in the batch

    def _add(self, tok: int, pos: int, seq: int, logits: bool) -> None:
        a = self._arrays
        i = self.batch.n_tokens
        a.token[i], a.pos[i], a.seq[i], a.logits[i] = tok, pos, seq, logits
        if logits:
            self.out_at.append(i)
        self.batch.n_tokens = i + 1

    def _decode(self) -> None:
        """Start one step: llama_decode queues the work and returns; results are waited for
        when they are read (llama_get_logits, llama_get_sampled_token_ith)."""
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
        sampler = self._sampler()
        try:
            return self._loop(requests, on_done, sampler, mem)
        finally:  # a step ended by its text may still be running: nothing outlives the run
            llama_cpp.llama_synchronize(self.ctx.ctx)
            sampler.close()

    def _sampler(self):
        if self.sampling == "graph":
            s = _GraphSampler(self)
            if s.ok:
                return s
            s.close()
        return _HostSampler(self)

    def _loop(self, requests: list[Request], on_done, sampler, mem) -> list[str]:
        import llama_cpp

        results = [""] * len(requests)
        pending = deque(range(len(requests)))
        free = list(range(self.n_seq - 1, -1, -1))
        live: dict[int, _Stream] = {}

        def finish(st: _Stream) -> None:
            st.done = True
            results[st.index] = st.text.strip()
            if on_done:
                on_done(st.index, results[st.index])
            del live[st.seq]
            free.append(st.seq)

        rows: list[_Stream] = []  # the stream of each output row of the step in flight
        while pending or live:
            # 1. Wait for the step in flight; each stream with a row takes its next token.
            sampled: list[_Stream] = []
            for st, tok in zip(rows, sampler.tokens(rows)):
                if st.done:  # ended by its text while that step ran: the token is dropped
                    continue
                if st.take(tok, self):
                    st.settle(self)  # its last token's text, before it is reported
                    finish(st)
                else:
                    sampled.append(st)
            # 2. Free streams take the next requests; their prompts are fed from this step.
            while free and pending:
                q, i = free.pop(), pending.popleft()
                llama_cpp.llama_memory_seq_rm(mem, q, -1, -1)
                live[q] = _Stream(i, requests[i], q)
                sampler.start(live[q])
            if not live:
                break
            # 3. Start the next step: a token for every decoding sequence, then prompt chunks.
            rows = self._fill_batch(live, self._chunk(live))
            self._decode()
            # 4. While it runs: the text of the tokens just taken; a stop string or a loop ends
            # its stream now (its token in the running step is then dropped).
            for st in sampled:
                if st.settle(self):
                    finish(st)
        return results

    def _chunk(self, live: dict[int, _Stream]) -> int:
        """Prompt tokens this step may carry: all the batch has room for. Thin chunks spread over
        many steps were measured slower on an H100 (docs/benchmarks.md): a small chunk runs the
        matrix kernels at a fraction of their speed. LCDOC_PREFILL_CHUNK fixes the size, for
        measuring."""
        room = self.n_batch - sum(1 for st in live.values() if st.next is not None)
        return min(room, self.fixed_chunk) if self.fixed_chunk else room

    def _fill_batch(self, live: dict[int, _Stream], chunk: int) -> list[_Stream]:
        """Batch this step's tokens; the streams of the output rows, in batch order.

        Tokens go in sequence-id order: llama.cpp splits a batch over per-sequence cache streams
        only along increasing ids, so any other order costs extra passes over the weights."""
        take: dict[int, int] = {}
        for q, st in live.items():  # the room goes to prompts in the order they started
            if chunk <= 0:
                break
            if st.next is None and st.fed < len(st.prompt):
                take[q] = min(len(st.prompt) - st.fed, chunk)
                chunk -= take[q]
        self._clear()
        rows = []
        for q in sorted(live):
            st = live[q]
            if st.next is not None:
                self._add(st.next, st.pos, q, True)
                st.pos += 1
                st.next = None
                rows.append(st)
            elif q in take:
                last = st.fed + take[q] == len(st.prompt)
                self._add_chunk(st.prompt[st.fed:st.fed + take[q] - last], st.fed, q)
                st.fed += take[q] - last
                if last:  # the prompt's last token asks for the first answer token
                    self._add(st.prompt[-1], st.fed, q, True)
                    st.fed += 1
                    rows.append(st)
        return rows

    def _add_chunk(self, toks: list[int], pos: int, seq: int) -> None:
        """Prompt tokens at positions pos, pos+1, ... with no output, written as slices."""
        a, n, k = self._arrays, self.batch.n_tokens, len(toks)
        a.token[n:n + k] = toks
        a.pos[n:n + k] = np.arange(pos, pos + k, dtype=np.int32)
        a.seq[n:n + k] = seq
        a.logits[n:n + k] = 0
        self.batch.n_tokens = n + k

    @staticmethod
    def _greedy(logits: np.ndarray, recent: list[list[int]]) -> list[int]:
        """llama.cpp's repetition penalty (divide positive logits, multiply negative ones) over
        each row's last REPEAT_LAST_N tokens, then the argmax of every row, all rows at once.
        A token that recurs is penalised once: every copy writes the same value, computed from
        the logit before the penalty."""
        n = len(recent)
        idx = np.zeros((n, REPEAT_LAST_N), dtype=np.int64)
        for i, hist in enumerate(recent):
            h = hist[-REPEAT_LAST_N:]
            if h:
                idx[i, :len(h)] = h
                idx[i, len(h):] = h[0]
        rows = np.arange(n)[:, None]
        vals = logits[rows, idx]
        pen = np.where(vals > 0, vals / REPEAT_PENALTY, vals * REPEAT_PENALTY)
        some = np.array([bool(h) for h in recent])[:, None]  # a row with no history keeps its own
        logits[rows, idx] = np.where(some, pen, vals)
        return logits.argmax(axis=1).tolist()


class _BatchArrays:
    """numpy views of a llama_batch's arrays, so a prompt chunk is written as slices; each
    token's seq_id pointer is aimed into one array of ours (restored before the batch is freed)."""

    def __init__(self, batch, n: int) -> None:
        as_array = np.ctypeslib.as_array
        self.token = as_array(batch.token, shape=(n,))
        self.pos = as_array(batch.pos, shape=(n,))
        self.logits = as_array(ctypes.cast(batch.logits, ctypes.POINTER(ctypes.c_int8)), shape=(n,))
        as_array(batch.n_seq_id, shape=(n,))[:] = 1
        self.seq = np.zeros(n, dtype=np.int32)
        ptrs = as_array(ctypes.cast(batch.seq_id, ctypes.POINTER(ctypes.c_uint64)), shape=(n,))
        self._ptrs, self._own = ptrs, ptrs.copy()
        ptrs[:] = self.seq.ctypes.data + 4 * np.arange(n, dtype=np.uint64)

    def restore(self) -> None:
        self._ptrs[:] = self._own


class _HostSampler:
    """The greedy choice in numpy, over the logits llama.cpp copies back for every output row."""

    def __init__(self, dec: ParallelDecoder) -> None:
        self.dec = dec

    def start(self, st: "_Stream") -> None:
        pass

    def tokens(self, rows: list["_Stream"]) -> list[int]:
        if not rows:
            return []
        logits = self.dec._output_logits(len(rows))
        return ParallelDecoder._greedy(logits, [st.history for st in rows])

    def close(self) -> None:
        pass


class _GraphSampler:
    """The same penalty and greedy choice as a llama.cpp sampler chain per sequence, run inside
    the decode's graph (llama.cpp's backend sampling): only the token comes back. `ok` is False
    where the build cannot offload it."""

    def __init__(self, dec: ParallelDecoder) -> None:
        import llama_cpp as lc

        self.dec, self.chains, self.ok = dec, {}, False
        if not hasattr(lc, "llama_set_sampler"):
            return
        self.ok = True
        for q in range(dec.n_seq):
            chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
                dec.n_vocab, REPEAT_LAST_N, REPEAT_PENALTY, 0.0, 0.0))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            self.chains[q] = chain
            if not lc.llama_set_sampler(dec.ctx.ctx, q, chain):
                self.ok = False
                break

    def start(self, st: "_Stream") -> None:
        import llama_cpp as lc

        chain = self.chains[st.seq]
        lc.llama_sampler_reset(chain)
        for tok in st.history:
            lc.llama_sampler_accept(chain, tok)

    def tokens(self, rows: list["_Stream"]) -> list[int]:
        import llama_cpp as lc

        out = []
        for i, st in zip(self.dec.out_at, rows):  # by the token's index in the batch
            tok = int(lc.llama_get_sampled_token_ith(self.dec.ctx.ctx, i))
            if tok < 0:
                raise RuntimeError("llama.cpp sampled no token for a side-by-side sequence")
            lc.llama_sampler_accept(self.chains[st.seq], tok)
            out.append(tok)
        return out

    def close(self) -> None:
        import llama_cpp as lc

        for q, chain in self.chains.items():
            lc.llama_set_sampler(self.dec.ctx.ctx, q, None)
            lc.llama_sampler_free(chain)
        self.chains = {}


class _Stream:
    """One request in flight: its position, its answer so far, and what stops it."""

    def __init__(self, index: int, req: Request, seq: int = 0) -> None:
        self.index = index
        self.seq = seq
        self.stops = req.stops
        self.prompt = req.prompt
        self.max_tokens = req.max_tokens
        self.fed = 0  # prompt tokens already in the cache
        self.next: int | None = None  # the sampled token the next step feeds
        self.pos = len(req.prompt)
        self.history = list(req.prompt[-REPEAT_LAST_N:])
        self.n_out = 0
        self.unread: list[int] = []  # tokens taken whose text is not yet worked out
        self.raw = b""
        self.text = ""
        self.done = False

    def take(self, tok: int, dec: ParallelDecoder) -> bool:
        """Take one token (the cheap checks only); True when the answer ends here: end of
        generation or the length limit."""
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(dec.vocab, tok):
            return True
        self.n_out += 1
        self.history.append(tok)
        self.unread.append(tok)
        self.next = tok
        return self.n_out >= self.max_tokens

    def settle(self, dec: ParallelDecoder) -> bool:
        """Work out the text of the tokens taken; True when it ends the answer (a stop string,
        a loop), the text then cut where that begins."""
        if not self.unread:
            return False
        self.raw += dec.engine.llm.detokenize(self.unread)
        self.unread = []
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
