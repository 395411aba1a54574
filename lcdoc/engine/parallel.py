"""Several prompts decoded together: one llama.cpp context, one sequence per prompt, one batch per step.

Decoding is memory-bound: a step that advances four sequences reads the weights once, as a step
that advances one does. Summarising a folder therefore runs documents side by side rather than
one at a time. Each sequence has a cache stream of its own in the Engine's context, so its
attention spans only its own cells (a shared cache made every step attend over all of them).
"""

from __future__ import annotations

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
    """Side-by-side decoding in the Engine's own context, planned for n_seq sequences.

    Each sequence has its own cache stream in that context (the planner counted them), so no
    second context is ever created and no sequence attends over another's cells. Each step is one llama_decode for every active sequence; the
    repetition penalty and the greedy choice run on all their logits at once.
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

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def fits(self, group: list[Request]) -> bool:
        # A stream of n_ctx cells per sequence: each prompt and its answer within its own.
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

    def _prefill(self, group: list[Request]) -> np.ndarray:
        """Every prompt, packed into n_batch-token batches; the last-token logits of each."""
        last = np.empty((len(group), self.n_vocab), dtype=np.float32)
        queue = [(s, j, t) for s, r in enumerate(group) for j, t in enumerate(r.prompt)]
        for start in range(0, len(queue), self.n_batch):
            self.batch.n_tokens = 0
            ends = []
            for s, j, t in queue[start : start + self.n_batch]:
                is_end = j == len(group[s].prompt) - 1
                self._add(t, j, s, is_end)
                if is_end:
                    ends.append(s)
            self._decode()
            if ends:
                last[ends] = self._output_logits(len(ends))
        return last

    def generate(self, group: list[Request]) -> list[str]:
        """Greedy answers to each request, decoded side by side."""
        import llama_cpp

        if not self.fits(group):
            raise ValueError("group does not fit the parallel context")
        self.engine.forget_resident()  # the cells below are about to be overwritten
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx.ctx), True)
        logits = self._prefill(group)
        history = [list(r.prompt[-REPEAT_LAST_N:]) for r in group]
        raw = [b"" for _ in group]
        texts = [""] * len(group)
        n_out = [0] * len(group)
        pos = [len(r.prompt) for r in group]
        active = list(range(len(group)))
        while active:
            toks = self._greedy(logits, [history[s] for s in active])
            still = []
            for s, tok in zip(active, toks):
                if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                    continue
                n_out[s] += 1
                history[s].append(tok)
                if self._append(s, tok, raw, texts, group[s].stops) or n_out[s] >= group[s].max_tokens:
                    continue
                still.append((s, tok))
            if not still:
                break
            self.batch.n_tokens = 0
            for s, tok in still:
                self._add(tok, pos[s], s, True)
                pos[s] += 1
            self._decode()
            active = [s for s, _ in still]
            logits = self._output_logits(len(active))
        return [t.strip() for t in texts]

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

    def _append(self, s: int, tok: int, raw: list[bytes], texts: list[str],
                stops: tuple[str, ...]) -> bool:
        """Add one token's text to sequence s; True when a stop string or a loop ends it."""
        raw[s] += self.engine.llm.detokenize([tok])
        try:
            texts[s] += raw[s].decode("utf-8")
            raw[s] = b""
        except UnicodeDecodeError:  # a character split across tokens: wait for the rest
            if len(raw[s]) <= 8:
                return False
            texts[s] += raw[s].decode("utf-8", errors="replace")
            raw[s] = b""
        text = texts[s]
        hit = min((i for i in (text.find(x) for x in stops if x) if i >= 0), default=-1)
        if hit < 0:
            hit = repeat_start(text)
        if hit >= 0:
            texts[s] = text[:hit]
            return True
        return False


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
