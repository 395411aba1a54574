"""The lcdoc command line: parse, call the library, print. No retrieval or planning logic here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lcdoc import console
from lcdoc.errors import LcdocError

app = typer.Typer(
    help="Ask questions of long documents with a local model: stuffing or hybrid retrieval, per query.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"lcdoc {version('lcdoc')}")
        except PackageNotFoundError:
            print("lcdoc (not installed)")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-V", callback=_version,
                                                is_eager=True, help="Print the version.")] = False
          ) -> None:
    """Ask questions of long documents with a local model: stuffing or hybrid retrieval, per query."""

IndexOpt = Annotated[str, typer.Option("--index", "-i", metavar="NAME", help=(
    "Index name: letters, digits, '.', '_', '-' (never a path; indexes live in the index dir)."))]
IndexDirOpt = Annotated[Optional[Path], typer.Option("--index-dir", envvar="LCDOC_INDEX_DIR",
                                                     help="Folder holding named indexes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or logs on stderr.")]
RayOpt = Annotated[Optional[str], typer.Option(
    "--ray", help="Share the work out to a Ray cluster: its address, 'auto' (the one `ray start` "
    "made here) or 'local' (a new one for this run). Needs pip install \"lcdoc\\[ray]\".")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", help="With --ray: actors to start (default: one per GPU, else one per CPU).")]
NoServerOpt = Annotated[bool, typer.Option("--no-server", envvar="LCDOC_NO_SERVER",
                                           help="Work in-process even when `lcdoc serve` runs.")]


def _settings(**flags):
    from lcdoc.errors import UsageError
    from lcdoc.settings import load_settings

    if flags.get("ctx") is not None and flags["ctx"] < 1:
        raise UsageError(f"--ctx {flags['ctx']}: give a context of at least one token "
                         f"(leave it out for the model's native context)")
    return load_settings(**flags)


def _display(path: str) -> str:
    """A stored absolute path shown relative to the working directory when it is under it,
    control characters escaped (console.safe)."""
    try:
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:
        shown = path
    return console.safe(shown)


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Files and folders to index (recursively).")],
    index: IndexOpt = "default",
    index_dir: IndexDirOpt = None,
    include: Annotated[list[str], typer.Option("--include", help="Glob of files to take (repeatable).")] = [],
    exclude: Annotated[list[str], typer.Option("--exclude", help="Glob of files to leave out (repeatable).")] = [],
    max_mb: Annotated[Optional[float], typer.Option("--max-mb", help="Skip files larger than this.")] = None,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
    follow_links: Annotated[bool, typer.Option(
        "--follow-links", "-L", help="Take symbolic links that lead outside the folders given "
        "(left out by default, each named).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build or update an index: only new or changed files are embedded; deleted ones are dropped."""
    from lcdoc.index import Index, update_index

    from lcdoc.index.index import index_path

    console.QUIET = quiet
    s = _settings(index_dir=index_dir, max_file_mb=max_mb)
    existed = (index_path(index, s.index_dir, allow_path=False) / "index.sqlite").exists()
    idx = Index.open(index, s.index_dir, create=True, embed_model=s.embed_model, allow_path=False,
                     embed_precision=s.embed_precision)
    embed_with = None
    if ray:
        from lcdoc.cluster import RayEmbedder

        def embed_with(ix):
            model = ix._embed_model()
            emb = RayEmbedder(ray, str(model) if model else None, ix.embed_precision(), workers)
            console.log(f"Ray: {emb.workers} embedding worker(s) on {ray}")
            return emb
    with console.progress_bar() as bar:
        try:
            rep = update_index(idx, list(paths), tuple(include), tuple(exclude),
                               int(s.max_file_mb * 2**20), s.chunk_tokens, s.chunk_overlap,
                               on_progress=bar, embed_with=embed_with, follow_links=follow_links)
        except KeyboardInterrupt:
            console.log(f"interrupted: {idx.folder} keeps every batch committed before the interrupt")
            raise typer.Exit(130)
    for sk in rep.skipped:
        console.log(f"skipped {_display(sk.path)}: {console.safe(sk.reason)}")
    for k in rep.kept:
        console.err.print(f"lcdoc: warning: {_display(k.path)}: {k.reason}", markup=False,
                          highlight=False)
    for p in rep.removed_paths:
        console.log(f"removed {_display(p)}: the file no longer exists")
    for f in rep.failed:
        _name_failure(f.path, f.reason)
    counts = idx.store.counts()
    if as_json:
        print(json.dumps({
            "index": str(idx.folder), "files_seen": rep.files_seen, "indexed": rep.indexed,
            "unchanged": rep.unchanged, "removed": rep.removed, "pages": rep.pages,
            "chunks": rep.chunks, "tokens": rep.tokens, "seconds": round(rep.seconds, 3),
            "vector_index": rep.vector_index, "total": counts,
            "failed": [{"path": f.path, "reason": f.reason} for f in rep.failed],
            "skipped": [{"path": f.path, "reason": f.reason} for f in rep.skipped],
            "kept": [{"path": f.path, "reason": f.reason} for f in rep.kept],
            "removed_paths": rep.removed_paths,
        }))
    else:
        rate = rep.chunks / rep.seconds if rep.seconds else 0.0
        print(f"{idx.folder}: {rep.indexed} files indexed ({rep.unchanged} unchanged, {rep.removed} "
              f"removed, {len(rep.failed)} failed, {len(rep.skipped)} skipped), {rep.pages} pages, "
              f"{rep.chunks} chunks, {rep.tokens} tokens in {rep.seconds:.1f} s ({rate:.1f} chunks/s); "
              f"index holds {counts['documents']} documents, {counts['chunks']} chunks "
              f"({rep.vector_index} vectors)")
    if not rep.ok:
        if not existed and not counts["documents"]:  # an index of nothing is not left behind
            import shutil

            idx.close()
            shutil.rmtree(idx.folder, ignore_errors=True)
        from lcdoc.errors import NothingToReadError

        raise NothingToReadError(f"nothing to index in {', '.join(_display(str(p)) for p in paths)}"
                                 f" (no readable document)")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    index: IndexOpt = "default",
    index_dir: IndexDirOpt = None,
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, bm25 or dense.")] = "hybrid",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
) -> None:
    """Hybrid search (BM25 + dense, scores fused) over an index."""
    from rich.markup import escape

    from lcdoc.errors import UsageError
    from lcdoc.index import Index

    console.QUIET = quiet
    if mode not in ("hybrid", "bm25", "dense"):
        raise UsageError(f"--mode {mode}: choose hybrid, bm25 or dense")
    if not 1 <= k <= 10_000:
        raise UsageError(f"-k {k}: ask for between 1 and 10000 passages")
    if not query.strip():
        raise UsageError("the query is empty")
    s = _settings(index_dir=index_dir)
    from lcdoc.remote import search_remote

    hits = None if no_server else search_remote(query, index, k, mode, s, log=console.log)
    server = hits is not None
    if hits is None:
        with Index.open(index, s.index_dir, allow_path=False) as idx:
            hits = idx.require_documents().search(query, k=k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps({"results": [h.as_json() for h in hits], "server": server}))
        return
    for n, h in enumerate(hits, 1):
        where = _display(h.path)
        if h.page is not None:
            where += f" p. {h.page}" + (f"-{h.page_end}" if h.page_end != h.page else "")
        if h.heading:
            where += f"  § {console.safe(h.heading)}"
        snippet = console.safe(" ".join(h.text.split()))
        snippet = snippet[:300] + ("…" if len(snippet) > 300 else "")
        console.out.print(f"[bold]{n}.[/bold] [cyan]{escape(where)}[/cyan]  "
                          f"[dim]score {h.score:.4f}[/dim]")
        console.out.print(f"   {snippet}", markup=False)


ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", envvar="LCDOC_MODEL",
                                                  help="GGUF model file (default: packaged SmolLM2).")]
CtxOpt = Annotated[Optional[int], typer.Option("--ctx", help="Context to plan for (default: the "
                                               "model's native context; 131072 asks for 128K).")]
KvOpt = Annotated[Optional[str], typer.Option("--kv", help="Force the KV cache type: f16, q8_0, q4_0.")]
GpuOpt = Annotated[Optional[int], typer.Option("--gpu-layers", help="Layers on the GPU (0: CPU only).")]
MaxTokensOpt = Annotated[Optional[int], typer.Option("--max-tokens", help="Longest answer.")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Print the routing reasons on stderr.")]


def _ray_summarizer(address: str, workers: int | None, s, style: str, max_words: int,
                    prompt: str | None, digest: bool):
    """Summarize workers on a Ray cluster, loaded with this run's model and plan settings."""
    from lcdoc.cluster import RaySummarizer
    from lcdoc.errors import UsageError

    if digest:
        raise UsageError("--digest is not available with --ray: run it again without --ray "
                         "(the summaries are reused)")
    engine_args = dict(model=str(s.model) if s.model else None, n_ctx=s.ctx, kv_type=s.kv_type,
                       gpu_layers=s.gpu_layers, n_threads=s.threads)
    options = dict(style=style, max_words=max_words, prompt=prompt)
    return RaySummarizer(address, engine_args, options, workers, console.log)


@app.command()
def plan(
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the model's architecture, KV cache sizes and the settings chosen for this machine."""
    from lcdoc.engine.arch import read_arch
    from lcdoc.engine.llm import resolve_model
    from lcdoc.engine.plan import KV_TYPES, fmt_bytes, kv_table, make_plan, plan_report
    from lcdoc.engine.system import probe_memory

    s = _settings(model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    arch = read_arch(resolve_model(s.model))
    p = make_plan(arch, probe_memory(), s.ctx, s.kv_type, s.gpu_layers)
    report = plan_report(arch, p)
    if as_json:
        report["effective"] = _effective_json(arch, p)
        print(json.dumps(report, indent=2))
        return
    from rich.table import Table

    m = report["model"]
    console.out.print(f"[bold]{arch.name}[/bold]  ({arch.path})")
    console.out.print(
        f"  {m['arch']}: {m['n_layer']} layers, {m['n_head']} heads, {m['n_head_kv']} KV heads "
        f"(GQA {arch.gqa_ratio:g}:1), head dim {m['head_dim']}, trained context {m['n_ctx_train']}, "
        f"RoPE base {m['rope_freq_base']:g}"
        + (f", sliding window {arch.sliding_window} on {len(arch.swa_layers)} of {arch.n_layer} "
           f"layers" if arch.sliding_window else ""))
    console.out.print("  KV bytes per token (all layers full): " + ", ".join(
        f"{t} {v:,.0f}" for t, v in report["kv_bytes_per_token"].items()))
    ctxs = sorted({4096, 32768, 131072, p.n_ctx})
    table = Table(title="KV cache size" + (" (window layers at their window)" if arch.swa_layers
                                            and not p.swa_full else ""))
    table.add_column("context", justify="right")
    for t in KV_TYPES:
        table.add_column(t, justify="right")
    for c, row in kv_table(arch, ctxs, p.swa_full).items():
        mark = " *" if c == p.n_ctx else ""
        table.add_row(f"{c:,}{mark}", *(fmt_bytes(row[t]) for t in KV_TYPES))
    console.out.print(table)
    rope = f"YaRN x{p.rope_factor:g}" if p.rope_scaling == "yarn" else "none"
    console.out.print(
        f"[bold]Plan[/bold]: n_ctx {p.n_ctx:,}, KV {p.type_k}/{p.type_v} "
        f"({fmt_bytes(p.kv_cache_bytes)}), flash attention {'on' if p.flash_attn else 'off'}, "
        f"RoPE scaling {rope}, {p.device} with {p.n_gpu_layers} GPU layers"
        f"{' (split over GPUs by layer)' if p.split_mode == 'layer' else ''}, "
        f"n_batch {p.n_batch}/n_ubatch {p.n_ubatch}"
        + (f", swa_full {p.swa_full}" if arch.swa_layers else ""))
    for i, b in p.gpu_bytes:
        console.out.print(f"  GPU {i}: {fmt_bytes(b)} planned"
                          + (f" ({p.tensor_split[i]:.0%} of the layers)" if p.tensor_split else ""))
    for r in p.reasons:
        console.out.print(f"  - {r}", markup=False)
    console.out.print(f"  - {_effective_line(arch, p)}", markup=False)


def _effective_json(arch, p) -> dict:
    from lcdoc.calibrate import load_profile
    from lcdoc.engine.plan import cache_settings
    from lcdoc.route import default_stuff_limit

    prof = load_profile(arch.path, cache_settings(p))
    if prof is None:
        return {"calibrated": False, "stuff_limit": default_stuff_limit(arch.n_ctx_train)}
    return {"calibrated": True, "stuff_limit": prof.effective_length, "grid": prof.grid,
            "measured_at": prof.measured_at}


def _effective_line(arch, p) -> str:
    """The effective context (what auto stuffs) beside the addressable one."""
    from lcdoc.calibrate import load_profile
    from lcdoc.engine.plan import cache_settings
    from lcdoc.route import default_stuff_limit

    prof = load_profile(arch.path, cache_settings(p))
    if prof is not None:
        return (f"addressable context {p.n_ctx:,} tokens; effective (calibrated) "
                f"{prof.effective_length:,}: {prof.summary()}")
    return (f"addressable context {p.n_ctx:,} tokens; effective: not calibrated, auto stuffs up "
            f"to {default_stuff_limit(arch.n_ctx_train):,} (half the native context; run "
            f"lcdoc calibrate)")


@app.command()
def calibrate(
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    lengths: Annotated[Optional[str], typer.Option(
        "--lengths", help="Haystack lengths, e.g. 1k,2k,4k (default: doublings up to the context).")] = None,
    depths: Annotated[str, typer.Option("--depths", help="Where the fact is, in percent.")] = "10,50,90",
    full: Annotated[bool, typer.Option("--full", help="Measure every length, not only up to the "
                                       "first that falls below the threshold.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure how far into the planned context this model finds a fact (paraphrased needles);
    the router then stuffs only up to that effective length."""
    from lcdoc.calibrate import THRESHOLD, calibrate as run, profile_path
    from lcdoc.engine.llm import Engine
    from lcdoc.eval.niah import parse_list

    console.QUIET = quiet
    s = _settings(model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    eng = Engine(s.model, n_ctx=s.ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                 n_threads=s.threads)
    with console.progress_bar() as bar:
        def on_trial(tr, done: int, total: int) -> None:
            if bar:
                bar("trials", done, total)
            console.log(f"{tr.length} tokens, depth {tr.depth}%: "
                        f"{'found' if tr.found else 'missed'} ({tr.seconds:.1f} s)")

        prof = run(eng, s, parse_list(lengths) if lengths else None,
                   tuple(parse_list(depths)), on_trial=on_trial, full=full)
    if as_json:
        print(json.dumps({**prof.__dict__, "path": str(profile_path(eng.path, eng.cache_settings))}))
        return
    print(f"{Path(prof.model).name} at n_ctx {prof.n_ctx} ({prof.settings})")
    print("| length | found |\n|---:|---:|")
    for length, share in sorted(prof.grid.items(), key=lambda x: int(x[0])):
        print(f"| {int(length):,} | {share:.0%} |")
    print(f"effective length: {prof.effective_length:,} tokens (every length up to it found the "
          f"fact at {THRESHOLD:.0%} of depths or more); {prof.seconds:.0f} s")


@app.command()
def doctor(index_dir: IndexDirOpt = None, as_json: JsonOpt = False) -> None:
    """Versions, GPU support of llama.cpp, GPUs and free memory, default models, index folder."""
    from lcdoc.doctor import run_checks

    s = _settings(index_dir=index_dir)
    checks = run_checks(s)
    if as_json:
        print(json.dumps(checks, indent=2))
    else:
        for name, (ok, detail) in checks.items():
            mark = "[green]ok[/green]  " if ok else ("[yellow]--[/yellow]  " if ok is None
                                                    else "[red]FAIL[/red]")
            console.out.print(f"{mark} {name}: {detail}")
    if any(ok is False for ok, _ in checks.values()):
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    paths: Annotated[Optional[list[str]], typer.Argument(metavar="[PATH...]", help="Files or folders; '-' reads stdin.")] = None,
    index: Annotated[Optional[str], typer.Option("--index", "-i", help="Also (or only) ask this index.")] = None,
    index_dir: IndexDirOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="auto, stuff, rag or hybrid.")] = "auto",
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    max_tokens: MaxTokensOpt = None,
    explain: ExplainOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    continue_: ContinueOpt = False,
    conversation: ConversationOpt = None,
    no_log: NoLogOpt = False,
) -> None:
    """Answer a question about files, stdin or an index, stuffing or retrieving as the query needs.

    A running `lcdoc serve` answers it when there is one (the model and document states are
    resident there); otherwise the model is loaded here. -c continues the last conversation
    (its documents too, when none are given).
    """
    console.QUIET = quiet
    paths = list(paths or [])
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers,
                  answer_tokens=max_tokens)
    hist, thread = _thread(s, continue_, conversation, no_log, paths, index, mode)
    paths, index, mode = thread.paths, thread.index, thread.mode
    if not paths and index is None and not sys.stdin.isatty():
        paths = ["-"]  # `cat report.txt | lcdoc ask "..."`
    stdin_data = sys.stdin.buffer.read() if "-" in paths else None
    stream = sys.stdout.isatty() and not as_json
    ans = _answer(question, paths, index, mode, s, explain, stream, no_server, stdin_data,
                  history=thread.turns)
    ans = _record(hist, thread, question, ans)
    if as_json:
        print(json.dumps(ans.as_json()))
    else:
        if not stream:
            print(ans.answer)
        _print_sources(ans)
    _log_answer(ans)
    _save_state(ans)


ContinueOpt = Annotated[bool, typer.Option("--continue", "-c", help="Continue the last "
                                           "conversation (its documents, when none are given).")]
ConversationOpt = Annotated[Optional[str], typer.Option(
    "--conversation", help="Continue this conversation (an id from `lcdoc log`).")]
NoLogOpt = Annotated[bool, typer.Option("--no-log", help="Record nothing in the history.")]


def _thread(s, continue_: bool, conversation: str | None, no_log: bool, paths: list[str],
            index: str | None, mode: str):
    """(the history or None, the conversation this answer belongs to)."""
    from lcdoc.conversation import open_thread
    from lcdoc.history import open_history

    hist = None if no_log or not s.history else open_history(log=console.log)
    cid = conversation or ("last" if continue_ else None)
    return hist, open_thread(hist, cid, [p if p == "-" else os.path.abspath(p) for p in paths],
                             index, mode)


def _record(hist, thread, question: str, ans):
    """The answer with its conversation and turn, recorded in the history (a failure to record
    is a warning, never a failed answer)."""
    import dataclasses

    turn = len(thread.turns) + 1
    if hist is not None:
        try:
            turn = hist.record(thread.id, question, ans.as_json(),
                               [p for p in thread.paths if p != "-"], thread.index, thread.mode)
        except Exception as e:  # a locked, full or read-only disk: the answer stands
            console.log(f"lcdoc: warning: the history did not record this answer ({e})")
    thread.turns.append((question, ans.answer))
    return dataclasses.replace(ans, conversation=thread.id, turn=turn)


def _answer(question, paths, index, mode, s, explain, stream, no_server, stdin_data, history=None,
            engine=None):
    """The Answer from a running server, else from a model loaded in this process."""
    from lcdoc.remote import ask_remote

    def on_route(r) -> None:
        console.log(f"route: {r.route}")
        if explain:
            for reason in r.reasons:
                console.err.print(f"  - {reason}", markup=False)

    def on_text(t: str) -> None:
        sys.stdout.write(t)
        sys.stdout.flush()

    ans = None
    why_local: list[str] = []  # what the client said when it did not use a running server

    def remote_log(message: str) -> None:
        why_local.append(message.removeprefix("lcdoc: "))
        console.log(message)

    if not no_server:
        ans = ask_remote(question, paths, index, mode, s, on_text if stream else None, on_route,
                         stdin_data, history, log=remote_log)
    if ans is None:
        from lcdoc.ask import ask as ask_fn

        ans = ask_fn(question, paths, index, mode, settings=s, on_text=on_text if stream else None,
                     on_route=on_route, stdin_data=stdin_data, history=history, engine=engine)
    if stream:  # end the streamed answer's line before any note goes to the terminal
        sys.stdout.write("\n")
        sys.stdout.flush()
    if explain and ans.escalated:
        console.err.print(f"  - {ans.reasons[-1]}", markup=False)
    if explain:
        console.err.print("  - " + _where_answered(ans.server, no_server, why_local, engine),
                          markup=False)
    for path, why in ans.failed:
        _name_failure(path, why)
    return ans


def _where_answered(server: bool, no_server: bool, why_local: list[str], engine=None) -> str:
    """The one --explain line about the server: used, or why not."""
    if server:
        return "answered by the running lcdoc server (model and document states resident)"
    if engine is not None:
        return "answered in this process (the model this chat loaded, documents resident)"
    if why_local:
        return f"answered in this process: {why_local[-1]}"
    if no_server:
        return "answered in this process (--no-server)"
    return ("answered in this process (no server running; `lcdoc serve` keeps the model and "
            "documents resident)")


def _name_failure(path: str, why: str) -> None:
    console.err.print(f"lcdoc: error: {_display(path)}: {console.safe(why)}", markup=False,
                      highlight=False)


def _print_sources(ans) -> None:
    """The cited sources in [n] order, each quote on one line; all of them, said once, when
    the answer cites none (--json keeps every source, as it was)."""
    if not ans.supported:
        print("\n(No source sentence holds what this answer claims: check it before relying on it.)")
    if not ans.sources:
        return
    cited = [s for s in ans.sources if s.cited]
    print("\nSources:" if cited else "\nSources (the answer cites none by number; all it was given):")
    for src in sorted(cited or ans.sources, key=lambda s: s.n):
        print(f"  [{src.n}] {src.label_for(_display(src.path))}")
        if src.quote:
            print(f"      \u201c{_shorten(console.safe(src.quote), 96)}\u201d")


def _log_answer(ans) -> None:
    t, n = ans.timings, ans.tokens
    console.log(f"{ans.route}{' (escalated)' if ans.escalated else ''}"
                f"{', server' if ans.server else ''}: {n['prompt']} prompt tokens "
                f"({n.get('restored', 0)} restored) + {n['completion']} answer tokens; retrieve "
                f"{t['retrieve_s']:.1f} s, prefill {t['prefill_s']:.2f} s, generate "
                f"{t['generate_s']:.1f} s")


def _save_state(ans) -> None:
    """After the answer is out: close stdout (a pipe reader is done), then save the document's
    state for the next process, finishing the disk write before exiting."""
    eng = getattr(ans, "engine", None)
    if eng is None:
        return
    sys.stdout.flush()
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    except OSError:
        pass
    eng.stash_resident(disk_only=True)
    eng.cache.wait()


@app.command()
def summarize(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="Files and folders (recursively).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write one Markdown file per "
                                                "document here (mirroring folders) plus index.md.")] = None,
    style: Annotated[str, typer.Option("--style", help="brief, detailed or bullets.")] = "brief",
    max_words: Annotated[int, typer.Option("--max-words", help="Longest summary, in words.")] = 150,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Your own instruction.")] = None,
    digest: Annotated[bool, typer.Option("--digest", help="Also one summary of all the summaries.")] = False,
    parallel: Annotated[Optional[int], typer.Option("--parallel", help="Documents decoded side by "
                                                    "side, up to --ctx tokens each (default: 4 "
                                                    "on a GPU, 1 on a CPU).")] = None,
    include: Annotated[list[str], typer.Option("--include", help="Glob of files to take.")] = [],
    exclude: Annotated[list[str], typer.Option("--exclude", help="Glob of files to leave out.")] = [],
    index_dir: IndexDirOpt = None,
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per document, per line.")] = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    ray: RayOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Summarise every document: stuffed when it fits, hierarchical (map-reduce) when not; resumable."""
    from lcdoc.remote import summarize_remote

    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)

    def on_result(sm, reused: bool) -> None:
        if as_json:
            print(json.dumps(sm.as_json()), flush=True)
        elif out is None:
            print(f"## {_display(sm.path)}\n\n{sm.summary}\n", flush=True)
        console.log(f"{'reused' if reused else 'summarised'} {_display(sm.path)} ({sm.route}, "
                    f"{sm.tokens} tokens, {sm.seconds:.1f} s)")

    options = dict(style=style, max_words=max_words, prompt=prompt, include=list(include),
                   exclude=list(exclude), parallel=parallel, digest=digest)
    with console.progress_bar() as bar:
        try:
            final = None if no_server or ray else summarize_remote(
                paths, out, s, options, on_result, _name_failure, console.log, bar, log=console.log)
            if final is not None:
                console.log(f"summarised by the running server ({final['parallel']} side by side)")
                _summary_digest(final.get("digest"), final.get("documents", []), out, as_json)
                console.log(f"{final['done']} summarised, {final['reused']} reused, "
                            f"{len(final['failed'])} failed" + (f"; written to {out}" if out else ""))
                if final["failed"]:
                    raise typer.Exit(1)
                return
            from lcdoc.summarize import summarize_paths

            if ray:
                eng = _ray_summarizer(ray, workers, s, style, max_words, prompt, digest)
                n_seq = 1
            else:
                from lcdoc.engine.llm import Engine
                from lcdoc.engine.system import probe_memory

                n_seq = parallel or (4 if probe_memory().on_gpu and s.gpu_layers != 0 else 1)
                eng = Engine(s.model, n_ctx=s.ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                             n_threads=s.threads, n_seq=n_seq)
            rep = summarize_paths(paths, eng, out, s.index_dir / ".summaries", style, max_words,
                                  prompt, tuple(include), tuple(exclude), on_result, _name_failure,
                                  console.log, bar, n_seq, remote=eng if ray else None)
            if ray:
                eng.close()
        except KeyboardInterrupt:
            console.log("interrupted: finished summaries are kept; run again to continue")
            raise typer.Exit(130)
    everything = rep.done + rep.reused
    if digest and everything:
        from lcdoc.summarize import digest as digest_fn

        _summary_digest(digest_fn(everything, eng), [x.path for x in everything], out, as_json)
    console.log(f"{len(rep.done)} summarised, {len(rep.reused)} reused, {len(rep.failed)} failed"
                + (f"; written to {out}" if out else ""))
    if rep.failed:
        raise typer.Exit(1)


@app.command()
def serve(
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    parallel: Annotated[Optional[int], typer.Option("--parallel", help="Sequences side by side for "
                                                    "summarize, up to --ctx tokens each (default 1).")] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", help="Exit after this many seconds "
                                                "without a request (0: never).")] = 1800.0,
    memory_gb: Annotated[Optional[float], typer.Option("--memory-gb", help="Memory for the states of "
                                                       "documents no longer in the context (default: "
                                                       "half the RAM left after loading).")] = None,
    socket_path: Annotated[Optional[Path], typer.Option("--socket", envvar="LCDOC_SOCKET",
                                                        help="Unix socket to listen on.")] = None,
    index_dir: IndexDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Keep the model and documents resident; ask, search, summarize and chat use it by themselves.

    Listens on a Unix socket only this user can open; exits on SIGTERM, Ctrl-C or when idle.
    """
    from lcdoc import client
    from lcdoc.engine.plan import fmt_bytes
    from lcdoc.serve import Server

    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    path = Path(socket_path).expanduser() if socket_path else client.socket_path()
    srv = Server(s, path, idle_timeout, int(memory_gb * 2**30) if memory_gb is not None else None,
                 parallel, log=console.log)

    def ready(d: dict) -> None:  # always printed: scripts wait for this line
        console.err.print(
            f"lcdoc serve: ready on {d['socket']} (pid {d['pid']}; {Path(d['model']).name}, "
            f"n_ctx {d['n_ctx']}, KV {d['kv']}, {d['device']}, {d['n_seq']} sequence(s); document "
            f"states up to {fmt_bytes(d['memory_budget_bytes'])} in memory; idle timeout "
            f"{d['idle_timeout_s']:g} s)", markup=False, highlight=False)

    srv.serve(on_ready=ready)


@app.command()
def chat(
    paths: Annotated[Optional[list[str]], typer.Argument(metavar="[PATH...]", help="Files or folders to talk about.")] = None,
    index: Annotated[Optional[str], typer.Option("--index", "-i", help="Also (or only) this index.")] = None,
    index_dir: IndexDirOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="auto, stuff, rag or hybrid (per question).")] = "auto",
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    max_tokens: MaxTokensOpt = None,
    explain: ExplainOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer, per line.")] = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue a conversation: the last one, or the id given "
        "(`lcdoc log` lists them).")] = None,
    no_log: NoLogOpt = False,
) -> None:
    """A conversation over documents or an index: each turn extends what the context holds.

    Each answer sees the turns before it. From a pipe: one question per line, until the end. On
    a terminal: line editing and history; Ctrl-C stops an answer, Ctrl-C again or Ctrl-D leaves.
    """
    from lcdoc.chat import ChatSession
    from lcdoc.errors import UsageError

    console.QUIET = quiet
    paths = list(paths or [])
    if "-" in paths:
        raise UsageError("chat reads questions from stdin: give documents as files, not '-'")
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers,
                  answer_tokens=max_tokens)
    hist, thread = _thread(s, False, resume, no_log, paths, index, mode)
    session = ChatSession(thread, s)
    interactive = sys.stdin.isatty()
    if interactive:
        _chat_greeting(thread)
    for question in _questions(interactive):
        stream = sys.stdout.isatty() and not as_json
        try:
            ans = _answer(question, thread.paths, thread.index, thread.mode, s, explain, stream,
                          no_server or session.engine is not None, None, list(thread.turns),
                          session.engine)
        except KeyboardInterrupt:
            if not interactive:
                raise
            if session.engine is not None:  # cells of the cut answer: trust none of them
                session.engine.forget_resident()
            sys.stdout.write("\n")
            console.log("(stopped; the question is not part of the conversation)")
            continue
        session.remember(ans)
        ans = _record(hist, thread, question, ans)
        if as_json:
            print(json.dumps(ans.as_json()), flush=True)
        else:
            if not stream:
                print(ans.answer)
            _print_sources(ans)
            print(flush=True)
        _log_answer(ans)


def _chat_greeting(thread) -> None:
    if thread.resumed:
        console.log(f"lcdoc chat: conversation {thread.id}, resumed at turn "
                    f"{len(thread.turns) + 1}")
    else:
        console.log(f"lcdoc chat: conversation {thread.id}")
    console.log("ask about the documents; Ctrl-C stops an answer; an empty line, Ctrl-D or "
                "Ctrl-C at the prompt ends")


def _questions(interactive: bool):
    """Questions typed at a prompt (with line editing) or read one per line from a pipe."""
    if not interactive:
        for line in sys.stdin:
            if line.strip():
                yield line.strip()
        return
    from lcdoc.chat import line_editor
    from lcdoc.history import default_path

    save = line_editor(default_path().with_name("chat-questions"))
    try:
        while True:
            try:
                line = input("> ")
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return
            if not line.strip():
                return
            yield line.strip()
    finally:
        if save:
            save()


@app.command("log")
def log_cmd(
    entry: Annotated[Optional[str], typer.Argument(help="An entry's number: show it whole, with "
                                                   "its sources.")] = None,
    n: Annotated[int, typer.Option("-n", help="How many recent entries.")] = 20,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Only entries whose "
                                                  "question or answer has these words.")] = None,
    conversation: ConversationOpt = None,
    delete: Annotated[Optional[str], typer.Option("--delete", help="Delete an entry (its number) "
                                                  "or a conversation (its id).")] = None,
    delete_all: Annotated[bool, typer.Option("--all", help="With --delete: delete every entry.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The history of answers: recent entries, one entry whole, a search, or deletion."""
    from lcdoc.errors import UsageError
    from lcdoc.history import open_history

    if n < 1:
        raise UsageError(f"-n {n}: ask for at least one entry")
    hist = open_history(log=console.log)
    if hist is None:
        raise typer.Exit(1)
    if delete_all and delete is None:
        raise UsageError("--all goes with --delete: lcdoc log --delete --all")
    if delete is not None:
        delete_all = delete_all or delete in ("all", "--all")
        gone = hist.delete_all() if delete_all else hist.delete(delete)
        if not gone and not delete_all:
            raise UsageError(f"no entry or conversation {delete!r} in the history")
        console.log(f"deleted {gone} entr{'y' if gone == 1 else 'ies'} from {hist.path}")
        return
    if entry is not None:
        if not entry.isdigit() or hist.get(int(entry)) is None:
            raise UsageError(f"no entry {entry!r} in the history (lcdoc log lists them)")
        e = hist.get(int(entry))
        if as_json:
            print(json.dumps(e.as_json()))
            return
        _print_entry(e)
        return
    entries = hist.recent(n, search, conversation)
    if as_json:
        print(json.dumps([e.as_json() for e in entries]))
        return
    for e in entries:
        when = _when(e.time)
        print(f"{e.id:>5}  {when}  {e.conversation} #{e.turn}  {e.route:<10} "
              f"{console.safe(_shorten(e.question, 60))}")
        print(f"{'':>7}{console.safe(_shorten(e.answer, 90))}")


def _when(t: float) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M", _time.localtime(t))


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


def _print_entry(e) -> None:
    print(f"entry {e.id}, conversation {e.conversation} turn {e.turn}, {_when(e.time)}")
    print(f"route {e.route}, model {Path(e.model).name}")
    where = ", ".join(_display(p) for p in e.paths) or "-"
    print(f"documents: {where}" + (f"; index {e.index_name}" if e.index_name else ""))
    print(f"\nQ: {console.safe(e.question)}\n\n{e.answer}")
    if e.sources:
        print("\nSources:")
        for src in e.sources:
            page = f" p. {src['page']}" if src.get("page") else ""
            head = f" § {console.safe(src['heading'])}" if src.get("heading") else ""
            print(f"  [{src['n']}] {_display(src['path'])}{page}{head}")
            if src.get("quote"):
                print(f"      \u201c{console.safe(src['quote'])}\u201d")


@app.command("indexes")
def indexes_cmd(index_dir: IndexDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the indexes: documents, chunks, size on disk, embedding model, last update."""
    import dataclasses

    from lcdoc.housekeeping import list_indexes

    s = _settings(index_dir=index_dir)
    found = list_indexes(s.index_dir)
    if as_json:
        print(json.dumps([dataclasses.asdict(i) for i in found]))
        return
    if not found:
        console.log(f"no indexes in {s.index_dir}")
        return
    print(f"{'name':<20} {'documents':>9} {'chunks':>8} {'size':>9}  {'embedding':<26} updated")
    for i in found:
        model = f"{i.embed_model.rsplit('/', 1)[-1][:20]} {i.embed_precision}".strip()
        when = _when(i.updated) if i.updated else "-"
        print(f"{console.safe(i.name):<20} {i.documents:>9} {i.chunks:>8} {_mb(i.bytes):>9}  "
              f"{model:<26} {when}" + (f"  ({i.problem})" if i.problem else ""))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


@app.command("drop")
def drop_cmd(
    name: Annotated[str, typer.Argument(help="The index's name (`lcdoc indexes` lists them).")],
    index_dir: IndexDirOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (for scripts).")] = False,
) -> None:
    """Delete an index (its folder under the index dir); asks first on a terminal."""
    from lcdoc.errors import UsageError
    from lcdoc.housekeeping import drop_index, list_indexes

    s = _settings(index_dir=index_dir)
    info = next((i for i in list_indexes(s.index_dir) if i.name == name), None)
    if info is None:
        drop_index(name, s.index_dir)  # says why it is not an index (a bad name, none there)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"drop {name}: add --yes to delete without asking")
        what = f"{info.documents} documents, {_mb(info.bytes)}" if info else "?"
        if not typer.confirm(f"Delete index {name} ({what})?", default=False, err=True):
            raise typer.Exit(1)
    folder = drop_index(name, s.index_dir)
    console.log(f"deleted {folder}")


@app.command("cache")
def cache_cmd(
    action: Annotated[Optional[str], typer.Argument(help="clear, or nothing to list.")] = None,
    kind: Annotated[Optional[str], typer.Argument(
        help="prompt, onnx, calibration, history or all (all: every cache but the history).")] = None,
    index_dir: IndexDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the prompt cache, ONNX exports, calibration profiles and history hold; `cache clear KIND`."""
    from lcdoc.errors import UsageError
    from lcdoc.housekeeping import CACHE_KINDS, cache_sizes, clear_cache

    s = _settings(index_dir=index_dir)
    if action is None:
        sizes = cache_sizes(s.index_dir)
        if as_json:
            print(json.dumps({k: {"path": p, "bytes": b, "files": n}
                              for k, (p, b, n) in sizes.items()}))
            return
        for k, (p, b, n) in sizes.items():
            print(f"{k:<12} {_mb(b):>9} {n:>6} file(s)  {console.safe(p)}")
        return
    if action != "clear":
        raise UsageError(f"cache {action}: the action is clear (or nothing, to list)")
    if kind not in CACHE_KINDS + ("all",):
        raise UsageError(f"cache clear {kind or ''}: choose {', '.join(CACHE_KINDS)} or all")
    freed = clear_cache(kind, s.index_dir)
    if as_json:
        print(json.dumps(freed))
    for k, b in freed.items():
        console.log(f"cleared {k}: {_mb(b)}")


def _summary_digest(text: str | None, documents: list[str], out: Path | None, as_json: bool) -> None:
    if not text:
        return
    if out is not None:
        from lcdoc.private import write_private

        write_private(out / "digest.md", "# Digest\n\n" + text + "\n\n" + "\n".join(
            f"[{i}] {p}" for i, p in enumerate(documents, 1)) + "\n", errors="backslashreplace")
    if as_json:
        print(json.dumps({"digest": text, "documents": documents}))
    else:
        print("## Digest\n\n" + text)


eval_app = typer.Typer(help="Measure lcdoc on your model and documents.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


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
    from lcdoc.eval.niah import heatmap, parse_list, run_niah

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
                          on_trial=on_trial, on_failure=_name_failure, n_ctx=ctx)
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
    rows = run_recall(list(paths or []), work, facts, on_failure=_name_failure, precisions=wanted,
                      seeds=max(1, seeds))
    if as_json:
        print(json.dumps([r.__dict__ for r in rows]))
        return
    print("| retriever | embedding | recall@1 | recall@5 | recall@10 | MRR | queries |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.mode} | {r.precision} | {r.recall_at_1:.3f} | {r.recall_at_5:.3f} | "
              f"{r.recall_at_10:.3f} | {r.mrr:.3f} | {r.queries} |")


@app.command()
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
    from lcdoc.eval.niah import parse_list
    from lcdoc.eval.speed import bench_engine, markdown_table
    from lcdoc.index.vectors import choose_kind
    from lcdoc.settings import load_settings

    parts = {p.strip() for p in only.split(",") if p.strip()}
    if not parts or parts - {"index", "search", "engine"}:
        raise UsageError(f"--only {only}: choose from index, search, engine")
    indexing = None
    if "index" in parts:
        with tempfile.TemporaryDirectory(prefix="lcdoc-bench-") as work:
            console.log("bench: timing text extraction and indexing")
            indexing = bench_indexing(list(corpus or []), work, load_settings().embed_model)
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


def _optional_values(argv: list[str]) -> list[str]:
    """`chat --resume` with no id means the last conversation (click has no optional values)."""
    import re

    argv = list(argv)
    if "--resume" in argv:
        i = argv.index("--resume")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if nxt is None or not re.fullmatch(r"[0-9a-f]{8}|last", nxt):
            argv.insert(i + 1, "last")
    if "--delete" in argv:  # `log --all --delete`: the flag came first
        i = argv.index("--delete")
        if i + 1 == len(argv) or argv[i + 1].startswith("-") and argv[i + 1] != "--all":
            argv.insert(i + 1, "all" if "--all" in argv else "")
    return argv


def main() -> None:
    """Entry point: run the app and turn lcdoc's errors into one-line messages and exit codes."""
    # Whatever lcdoc writes holds document text: this user's only, whatever the shell's umask
    # (the library also sets 0600/0700 itself where it writes; this covers SQLite's own files).
    os.umask(os.umask(0o077) | 0o077)
    # A file name that is not valid UTF-8 (another locale's bytes) prints as escapes, never crashes.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    try:
        app(args=_optional_values(sys.argv[1:]))
    except LcdocError as e:
        console.err.print(f"lcdoc: error: {console.safe(str(e))}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("LCDOC_DEBUG"):
            raise
        console.err.print(f"lcdoc: internal error: {type(e).__name__}: {console.safe(str(e))} (LCDOC_DEBUG=1 shows "
                          f"the traceback)", markup=False, highlight=False)
        sys.exit(1)
