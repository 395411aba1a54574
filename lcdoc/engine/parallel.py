"""Several prompts decoded together: one llama.cpp context, one sequence per prompt, one batch per step.

Decoding is memory-bound: a step that advances four sequences reads the weights once, as a step
that advances one does. Summarising a folder therefore runs documents side by side rather than
one at a time. The KV cache is split: each sequence has its own stream of n_ctx / n_seq cells, so
attention never spans the other documents.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from lcdoc.engine.llm import repeat_start

# The same repetition penalty as Engine.complete (llama.cpp's rule: divide positive logits,
# multiply negative ones), over the same window, so batched and single answers agree in kind.
REPEAT_PENALTY = 1.1
REPEAT_LAST_N = 64


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int
    stops: tuple[str, ...] = ()


class ParallelDecoder:
    """A second context on an Engine's model with room for n_seq sequences."""

    def __init__(self, engine, n_seq: int) -> None:
        import llama_cpp
        from llama_cpp import _internals as internals

        src = engine.llm.context_params
        params = llama_cpp.llama_context_params()
        ctypes.memmove(ctypes.byref(params), ctypes.byref(src), ctypes.sizeof(src))
        params.n_seq_max = n_seq
        params.kv_unified = False  # a stream per sequence: attention spans only its own cells
        self.engine = engine
        self.n_seq = n_seq
        self.n_ctx = int(params.n_ctx)
        self.n_batch = int(params.n_batch)
        self.ctx = internals.LlamaContext(model=engine.llm._model, params=params, verbose=False)
        self.vocab = engine.llm._model.vocab
        self.n_vocab = engine.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq)

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()

    def fits(self, group: list[Request]) -> bool:
        # Each sequence has its own stream of n_ctx / n_seq cells.
        per_seq = self.n_ctx // self.n_seq
        return len(group) <= self.n_seq and all(len(r.prompt) + r.max_tokens <= per_seq for r in group)

    def _add(self, tok: int, pos: int, seq: int, logits: bool) -> int:
        b = self.batch
        i = b.n_tokens
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def _decode(self) -> None:
        import llama_cpp

        rc = llama_cpp.llama_decode(self.ctx.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) in a parallel batch")

    def _logits(self, i: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def generate(self, group: list[Request]) -> list[str]:
        """Greedy answers to each request, decoded side by side."""
        import llama_cpp

        if not self.fits(group):
            raise ValueError("group does not fit the parallel context")
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx.ctx), True)
        last: dict[int, np.ndarray] = {}
        queue = [(s, j, t) for s, r in enumerate(group) for j, t in enumerate(r.prompt)]
        for start in range(0, len(queue), self.n_batch):
            self.batch.n_tokens = 0
            chunk = queue[start : start + self.n_batch]
            ends = {}
            for s, j, t in chunk:
                is_end = j == len(group[s].prompt) - 1
                i = self._add(t, j, s, is_end)
                if is_end:
                    ends[s] = i
            self._decode()
            for s, i in ends.items():
                last[s] = self._logits(i)
        history = [list(r.prompt[-REPEAT_LAST_N:]) for r in group]
        outs: list[list[int]] = [[] for _ in group]
        texts = [""] * len(group)
        pos = [len(r.prompt) for r in group]
        active = set(range(len(group)))
        while active:
            self.batch.n_tokens = 0
            order = []
            for s in sorted(active):
                logits = last[s]
                recent = np.array(history[s][-REPEAT_LAST_N:], dtype=np.int64)
                if len(recent):
                    vals = logits[recent]
                    logits[recent] = np.where(vals > 0, vals / REPEAT_PENALTY, vals * REPEAT_PENALTY)
                tok = int(np.argmax(logits))
                if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                    active.discard(s)
                    continue
                outs[s].append(tok)
                history[s].append(tok)
                texts[s] = self.engine.llm.detokenize(outs[s]).decode("utf-8", errors="ignore")
                hit = min((i for i in (texts[s].find(x) for x in group[s].stops if x) if i >= 0),
                          default=-1)
                if hit < 0:
                    hit = repeat_start(texts[s])
                if hit >= 0:
                    texts[s] = texts[s][:hit]
                    active.discard(s)
                    continue
                if len(outs[s]) >= group[s].max_tokens:
                    active.discard(s)
                    continue
                order.append((s, self._add(tok, pos[s], s, True)))
                pos[s] += 1
            if not order:
                break
            self._decode()
            for s, i in order:
                last[s] = self._logits(i)
        return [t.strip() for t in texts]


def run_many(engine, decoder: ParallelDecoder | None, requests: list[Request]) -> list[str]:
    """Answers in request order: packed into groups that fit the decoder, or one by one without it."""
    if decoder is None:
        out = []
        for r in requests:
            c = engine.complete_tokens(r.prompt[:0] + r.prompt, [], max_tokens=r.max_tokens,
                                       stop=list(r.stops), cache_prefix=False)
            out.append(c.text.strip())
        return out
    results: list[str | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))
    group: list[int] = []

    def flush() -> None:
        for i, text in zip(group, decoder.generate([requests[i] for i in group])):
            results[i] = text
        group.clear()

    for i in order:
        if group and not decoder.fits([requests[j] for j in group + [i]]):
            flush()
        if not decoder.fits([requests[i]]):
            c = engine.complete_tokens(requests[i].prompt, [], max_tokens=requests[i].max_tokens,
                                       stop=list(requests[i].stops), cache_prefix=False)
            results[i] = c.text.strip()
            continue
        group.append(i)
    if group:
        flush()
    return [r or "" for r in results]
