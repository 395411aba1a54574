"""`lcdoc eval ...` and `lcdoc bench`: the measuring commands, registered on the CLI by
`register` (they take the CLI's settings function, so settings are still resolved at the edge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from lcdoc import console, render

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or logs on stderr.")]
IndexDirOpt = Annotated[Optional[Path], typer.Option("--index-dir", envvar="LCDOC_INDEX_DIR",
                                                     help="Folder holding named indexes.")]
ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", envvar="LCDOC_MODEL",
                                                  help="GGUF model file (default: packaged SmolLM2).")]
_settings: Callable = lambda **flags: None  # noqa: E731  (the CLI's, set by register)


def register(app: typer.Typer, settings: Callable) -> None:
    """Add `eval niah`, `eval retrieval` and `bench` to the CLI's app."""
    global _settings
    _settings = settings
    app.add_typer(eval_app, name="eval")
    app.command()(bench)


eval_app = typer.Typer(help="Measure lcdoc on your model and documents.", no_args_is_help=True)


@eval_app.command("niah")
def eval_niah(
    haystack: Annotated[Optional[list[str]], typer.Option("--haystack", help="Documents to build "
                                                          "the haystack from (default: bundled).")] = None,
    lengths: Annotated[str, typer.Option("--lengths", help="Haystack lengths in model tokens.")] = "1k,2k,4k",
    depths: Annotated[str, typer.Option("--depths", help="Needle depths in percent.")] = "0,25,50,75,100",
    mode: Annotated[str, typer.Option("--mode", help="stuff, rag or auto; several side by side: "
                                      "stuff,rag,auto (a folder and heat map each).")] = "stuff",
    needles: Annotated[int, typer.Option("--needles", help="Facts planted and asked for at once.")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Folder for trials.csv/json and heatmap.png.")] = Path("niah-out"),
    model: ModelOpt = None,
    ctx: Annotated[Optional[int], typer.Option("--ctx", help="One planned context for every mode "
                                               "and length (YaRN past the native one).")] = None,
    index_dir: IndexDirOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Needle-in-a-haystack grid through the `lcdoc ask` path, with a heat map."""
    from lcdoc.engine.llm import resolve_model
    from lcdoc.eval.niah import heatmap, run_niah
    from lcdoc.qa.needles import parse_list

    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model)
    L, D = parse_list(lengths), parse_list(depths)
    modes = [m.strip() for m in mode.split(",") if m.strip()]

    def on_trial(t) -> None:
        console.log(f"{t.mode:>5} {t.length:>7} tokens, depth {t.depth:>3}%: {t.found}/{t.needles} "
                    f"({t.route}, {t.rope}, {t.seconds:.1f} s)")

    results = {}
    for m in modes:
        folder = out / m if len(modes) > 1 else out
        trials = run_niah(L, D, m, needles, haystack, str(s.model) if s.model else None, folder, s,
                          on_trial=on_trial, on_failure=render.failure, n_ctx=ctx)
        ropes = sorted({t.rope for t in trials})
        title = (f"NIAH: {resolve_model(s.model).name}, mode {m}, {needles} needle(s), "
                 f"{'bundled haystack' if not haystack else 'user haystack'}"
                 + (f", --ctx {ctx}" if ctx else "") + f"; RoPE: {', '.join(ropes)}")
        png = heatmap(folder / "trials.csv", folder / "heatmap.png", title)
        results[m] = (trials, png)
    if as_json:
        print(json.dumps({m: {"mean_score": sum(t.score for t in tr) / len(tr), "trials": len(tr),
                              "png": str(png), "by_length": _by_length(tr)}
                          for m, (tr, png) in results.items()}))
        return
    print("| length | " + " | ".join(modes) + " |\n|---:|" + "---:|" * len(modes))
    for length in L:
        cells = []
        for m in modes:
            row = [t for t in results[m][0] if t.length == length]
            cells.append(f"{sum(t.found for t in row)}/{sum(t.needles for t in row)}")
        print(f"| {length:,} | " + " | ".join(cells) + " |")
    for m, (tr, png) in results.items():
        print(f"{m}: {len(tr)} trials, mean score {sum(t.score for t in tr) / len(tr):.2f}; heat map {png}")


def _by_length(trials) -> dict:
    out: dict = {}
    for t in trials:
        found, total = out.get(str(t.length), (0, 0))
        out[str(t.length)] = (found + t.found, total + t.needles)
    return out


@eval_app.command("retrieval")
def eval_retrieval(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Documents to plant facts in "
                                                         "(default: bundled haystack).")] = None,
    facts: Annotated[int, typer.Option("--facts", help="How many facts to plant and ask.")] = 24,
    work: Annotated[Path, typer.Option("--work", help="Scratch folder.")] = Path("recall-work"),
    precision: Annotated[Optional[str], typer.Option(
        "--precision", help="Embedding precisions to compare side by side, e.g. fp32,int8 "
        "(default: what a new index would use here).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Sets of planted facts, queries pooled.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Recall@1/5/10 and MRR for BM25 alone, dense alone and the fusion, on planted facts."""
    from lcdoc.errors import UsageError
    from lcdoc.eval.retrieval import run_recall
    from lcdoc.index.onnx_export import PRECISIONS

    wanted = tuple(p.strip() for p in precision.split(",")) if precision else (None,)
    if any(p not in PRECISIONS for p in wanted if p is not None):
        raise UsageError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    rows = run_recall(list(paths or []), work, facts, on_failure=render.failure, precisions=wanted,
                      seeds=max(1, seeds))
    if as_json:
        print(json.dumps([r.__dict__ for r in rows]))
        return
    print("| retriever | embedding | recall@1 | recall@5 | recall@10 | MRR | queries |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.mode} | {r.precision} | {r.recall_at_1:.3f} | {r.recall_at_5:.3f} | "
              f"{r.recall_at_10:.3f} | {r.mrr:.3f} | {r.queries} |")


def bench(
    sizes: Annotated[str, typer.Option("--sizes", help="Vector counts for search latency.")] = "10000,100000,1000000",
    ctx: Annotated[str, typer.Option("--ctx", help="Contexts for prefill/decode/TTFT.")] = "2048,4096",
    kv: Annotated[str, typer.Option("--kv", help="KV cache types.")] = "f16",
    corpus: Annotated[Optional[list[str]], typer.Option(
        "--corpus", help="Files or folders to time indexing on (default: the bundled haystack).")] = None,
    only: Annotated[str, typer.Option("--only", help="Parts to run: index,search,engine.")] = "index,search,engine",
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Indexing throughput, search latency at several corpus sizes, and engine speed (prefill, decode, TTFT)."""
    import tempfile

    from lcdoc.errors import UsageError
    from lcdoc.eval.bench import bench_indexing, bench_vector_search, machine
    from lcdoc.qa.needles import parse_list
    from lcdoc.eval.speed import bench_engine, markdown_table
    from lcdoc.index.vectors import choose_kind

    parts = {p.strip() for p in only.split(",") if p.strip()}
    if not parts or parts - {"index", "search", "engine"}:
        raise UsageError(f"--only {only}: choose from index, search, engine")
    indexing = None
    if "index" in parts:
        with tempfile.TemporaryDirectory(prefix="lcdoc-bench-") as work:
            console.log("bench: timing text extraction and indexing")
            indexing = bench_indexing(list(corpus or []), work, _settings().embed_model)
    rows = []
    if "search" in parts:
        for n in parse_list(sizes):
            rows += bench_vector_search([n], kinds=(choose_kind(n),))
    speed = []
    if "engine" in parts:
        speed = bench_engine(str(model) if model else None, parse_list(ctx), kv.split(","), 32)
    if as_json:
        print(json.dumps({"machine": machine(), "index": indexing.as_dict() if indexing else None,
                          "search": [r.as_dict() for r in rows],
                          "engine": [r.as_dict() for r in speed]}))
        return
    print(f"machine: {machine()}\n")
    if indexing:
        r = indexing
        print("| files | pages | chunks | tokens | seconds | pages/s | chunks/s | "
              "extraction, 1 process | extraction, N processes |\n|---|---|---|---|---|---|---|---|---|")
        print(f"| {r.files} | {r.pages} | {r.chunks:,} | {r.tokens:,} | {r.seconds:.1f} | "
              f"{r.pages_per_s:.2f} | {r.chunks_per_s:.1f} | {r.extract_serial_s:.2f} s | "
              f"{r.extract_parallel_s:.2f} s ({r.workers}) |\n")
    if rows:
        print("| vectors | index | p50 | p95 | build |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r.n_vectors:,} | {r.kind} | {r.p50_ms:.2f} ms | {r.p95_ms:.2f} ms | {r.build_s:.1f} s |")
        print()
    if speed:
        print(markdown_table(speed))
