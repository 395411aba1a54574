"""Where a side-by-side decode step's time goes: llama_decode for 1 and 8 sequences, and sampling."""
import sys
import time

import llama_cpp
import numpy as np

from lcdoc.engine.llm import Engine
from lcdoc.engine.parallel import ParallelDecoder

e = Engine(sys.argv[1], n_ctx=4096, n_seq=8)
d = ParallelDecoder(e)
rng = np.random.default_rng(0)
prompts = {q: [int(x) for x in rng.integers(100, 30000, 2500)] for q in range(8)}
llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(d.ctx.ctx), True)
t = time.perf_counter()
d._prefill(prompts)
print(f"prefill 8 x 2500 tokens: {time.perf_counter() - t:.2f} s")
pos = {q: 2500 for q in range(8)}
for n in (1, 8, 1):
    ts = []
    for _ in range(40):
        d.batch.n_tokens = 0
        for q in range(n):
            d._add(1000, pos[q], q, True)
            pos[q] += 1
        t = time.perf_counter()
        d._decode()
        d._output_logits(n).sum()
        ts.append(time.perf_counter() - t)
    print(f"decode step, {n} sequence(s): {np.median(ts) * 1000:.2f} ms")
rows = rng.standard_normal((8, d.n_vocab)).astype(np.float32)
t = time.perf_counter()
for _ in range(40):
    d._greedy(rows, [list(range(64))] * 8)
print(f"sampling 8 rows: {(time.perf_counter() - t) / 40 * 1000:.2f} ms")
