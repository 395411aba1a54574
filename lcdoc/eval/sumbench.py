"""Documents per hour for `summarize`: one document at a time against N side by side, in one run."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from lcdoc.engine.llm import Engine
    from lcdoc.summarize import LocalSummarizer, summarize_paths

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder")
    ap.add_argument("--model", default=None)
    ap.add_argument("--parallel", default="1,4")
    ap.add_argument("--max-words", type=int, default=80)
    a = ap.parse_args(argv)
    eng = Engine(a.model)
    print(f"plan: {eng.plan.device}, n_ctx {eng.n_ctx}, KV {eng.plan.type_k}", flush=True)
    for n in [int(x) for x in a.parallel.split(",")]:
        work = Path(tempfile.mkdtemp())
        t0 = time.perf_counter()
        rep = summarize_paths([a.folder], LocalSummarizer(eng, max_words=a.max_words, parallel=n),
                              work / "out", work / "cache", max_words=a.max_words)
        secs = time.perf_counter() - t0
        docs = len(rep.done)
        routes = sorted({s.route for s in rep.done})
        print(f"parallel {n}: {docs} documents in {secs:.1f} s = {docs / secs * 3600:.0f} documents/hour "
              f"(routes {routes}, {len(rep.failed)} failed)", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
