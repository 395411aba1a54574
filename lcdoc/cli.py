"""The lcdoc command line: parse the flags into a request, call the application layer (lcdoc.app),
render the result (lcdoc.render). No retrieval, planning or prompt logic here."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lcdoc import app as lcdoc_app
from lcdoc import console, render
from lcdoc.errors import LcdocError, NothingToReadError, UsageError
from lcdoc.settings import Settings, load_settings

STARTED = time.perf_counter()  # for start_s: the process's own start-up, imports included

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


def _settings(**flags) -> Settings:
    """The settings, resolved once here: defaults < config file < LCDOC_* < these flags."""
    if flags.get("ctx") is not None and flags["ctx"] < 1:
        raise UsageError(f"--ctx {flags['ctx']}: give a context of at least one token "
                         f"(leave it out for the model's native context)")
    return load_settings(**flags)


ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", envvar="LCDOC_MODEL",
                                                  help="GGUF model file (default: packaged SmolLM2).")]
CtxOpt = Annotated[Optional[int], typer.Option("--ctx", help="Context to plan for (default: the "
                                               "model's native context; 131072 asks for 128K).")]
KvOpt = Annotated[Optional[str], typer.Option("--kv", help="Force the KV cache type: f16, q8_0, q4_0.")]
GpuOpt = Annotated[Optional[int], typer.Option("--gpu-layers", help="Layers on the GPU (0: CPU only).")]
MaxTokensOpt = Annotated[Optional[int], typer.Option("--max-tokens", help="Longest answer.")]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Print the routing reasons on stderr.")]
ContinueOpt = Annotated[bool, typer.Option("--continue", "-c", help="Continue the last "
                                           "conversation (its documents, when none are given).")]
ConversationOpt = Annotated[Optional[str], typer.Option(
    "--conversation", help="Continue this conversation (an id from `lcdoc log`).")]
NoLogOpt = Annotated[bool, typer.Option("--no-log", help="Record nothing in the history.")]
MaxSecondsOpt = Annotated[Optional[float], typer.Option(
    "--max-seconds", help="Time budget: an escalation predicted to take the answer past it is "
    "not taken, and the answer says what it did not read (default: 600 on a GPU, 120 on a CPU).")]


# --- index and search -----------------------------------------------------------------------
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
    console.QUIET = quiet
    s = _settings(index_dir=index_dir, max_file_mb=max_mb)
    req = lcdoc_app.IndexRequest(tuple(str(p) for p in paths), index, tuple(include),
                                 tuple(exclude), follow_links, ray, workers, s)
    with console.progress_bar() as bar:
        res = lcdoc_app.index(req, lcdoc_app.Events(log=console.log), on_progress=bar)
    render.index_notes(res)
    render.json_out(res) if as_json else render.index_line(res)
    if not res.report.ok:
        raise NothingToReadError(f"nothing to index in {', '.join(render.display(str(p)) for p in paths)}"
                                 f" (no readable document)")
    if res.report.faults:  # each named above; the others are in the index, and a script learns
        raise typer.Exit(1)  # that some could not be read (as summarize, cp or tar do)


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
    console.QUIET = quiet
    lcdoc_app.SearchRequest(query, index, k, mode).check()  # before the settings are read
    req = lcdoc_app.SearchRequest(query, index, k, mode, _settings(index_dir=index_dir))
    res = lcdoc_app.run(req, lcdoc_app.Events(log=console.log), no_server)
    render.json_out(res) if as_json else render.hits(res)


# --- the model ------------------------------------------------------------------------------
@app.command()
def plan(
    model: ModelOpt = None,
    ctx: CtxOpt = None,
    kv: KvOpt = None,
    gpu_layers: GpuOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the model's architecture, KV cache sizes and the settings chosen for this machine."""
    arch, p, report, effective = lcdoc_app.plan(
        _settings(model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers))
    render.json_out(report, indent=2) if as_json else render.plan(arch, p, report, effective)


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
    console.QUIET = quiet
    s = _settings(model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    with console.progress_bar() as bar:
        def on_trial(tr, done: int, total: int) -> None:
            if bar:
                bar("trials", done, total)
            console.log(f"{tr.length} tokens, depth {tr.depth}%: "
                        f"{'found' if tr.found else 'missed'} ({tr.seconds:.1f} s)")

        prof, path = lcdoc_app.calibrate(
            s, lcdoc_app.parse_list(lengths) if lengths else None,
            tuple(lcdoc_app.parse_list(depths)), full, on_trial)
    render.json_out({**prof.__dict__, "path": str(path)}) if as_json else render.calibration(prof)


@app.command()
def doctor(index_dir: IndexDirOpt = None, as_json: JsonOpt = False) -> None:
    """Versions, GPU support of llama.cpp, GPUs and free memory, default models, index folder."""
    checks = lcdoc_app.doctor(_settings(index_dir=index_dir))
    render.json_out(checks, indent=2) if as_json else render.checks(checks)
    if any(ok is False for ok, _ in checks.values()):
        raise typer.Exit(1)


# --- questions ------------------------------------------------------------------------------
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
    max_seconds: MaxSecondsOpt = None,
) -> None:
    """Answer a question about files, stdin or an index, stuffing or retrieving as the query needs.

    A running `lcdoc serve` answers it when there is one (the model and document states are
    resident there); otherwise the model is loaded here. -c continues the last conversation
    (its documents too, when none are given).
    """
    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers,
                  answer_tokens=max_tokens, max_seconds=max_seconds)
    hist, thread = lcdoc_app.start_conversation(
        s, conversation or ("last" if continue_ else None), no_log, list(paths or []), index,
        mode, console.log)
    docs = thread.paths
    if not docs and thread.index is None and not sys.stdin.isatty():
        docs = ["-"]  # `cat report.txt | lcdoc ask "..."`
    stream = sys.stdout.isatty() and not as_json
    req = lcdoc_app.AskRequest(question, tuple(docs), thread.index, thread.mode,
                               tuple(thread.turns),
                               sys.stdin.buffer.read() if "-" in docs else None, stream, s)
    answered = _answer(req, explain, no_server)
    _mark("answered")
    ans = lcdoc_app.record(hist, thread, question, answered, console.log)
    _mark("recorded")
    render.json_out(ans) if as_json else render.answer(ans, streamed=stream)
    render.answer_log(ans)
    _mark("printed")
    _save_state(ans)
    _mark("state handed over")


def _mark(phase: str) -> None:
    """With LCDOC_DEBUG set, the wall-clock time a phase ended, on stderr (lcdoc.events)."""
    lcdoc_app.debug_mark(phase)


def _answer(req, explain: bool, no_server: bool, engine=None):
    """The Answer from a running server, else from this process (a chat's resident engine)."""
    why_local: list[str] = []  # what the client said when it did not use a running server
    start_s = _process_age()

    def log(message: str) -> None:
        why_local.append(message.removeprefix("lcdoc: "))
        console.log(message)

    events = lcdoc_app.Events(text=render.streamed_text if req.stream else None,
                              route=lambda r: render.route(r, explain), log=log)
    ans = lcdoc_app.run(req, events, no_server,
                        lcdoc_app.local_app(engine) if engine is not None else None)
    ans.timings["start_s"] = start_s  # until the question was asked: start-up, settings, stdin
    if req.stream:  # end the streamed answer's line before any note goes to the terminal
        render.streamed_text("\n")
    if ans.not_read:
        console.err.print(f"lcdoc: note: {ans.not_read}", markup=False, highlight=False)
    if explain:
        render.explain(ans, _where_answered(ans.server, no_server, why_local, engine))
    for path, why in ans.failed:
        render.failure(path, why)
    return ans


def _process_age() -> float:
    """Seconds since this process started (the interpreter's own start-up included), from
    /proc; since this module was imported where there is no /proc."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - STARTED


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


_HELD: list = []  # engines this process keeps until it exits


def _save_state(ans) -> None:
    """After the answer is out: close stdout (a pipe reader is done), then hand the document's
    state to a writer that outlives this process (Engine.save_detached), so the next process
    restores it and this one exits without waiting for gigabytes to reach the disk."""
    eng = getattr(ans, "engine", None)
    if eng is None:
        return
    _HELD.append(eng)  # freed by the process's exit, not at the command's return (_exit)
    sys.stdout.flush()
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    except OSError:
        pass
    n = ans.tokens.get("prompt", 0) - ans.tokens.get("restored", 0)
    eng.save_detached(n / ans.timings["prefill_s"] if n >= 256 and ans.timings.get("prefill_s")
                      else None)
    eng.cache.wait()  # writes started during the answer (a window-sized SWA prefix)


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
    max_seconds: MaxSecondsOpt = None,
) -> None:
    """A conversation over documents or an index: each turn extends what the context holds.

    Each answer sees the turns before it. From a pipe: one question per line, until the end. On
    a terminal: line editing and history; Ctrl-C stops an answer, Ctrl-C again or Ctrl-D leaves.
    """
    from lcdoc.chat import ChatSession, greeting, questions

    console.QUIET = quiet
    paths = list(paths or [])
    if "-" in paths:
        raise UsageError("chat reads questions from stdin: give documents as files, not '-'")
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers,
                  answer_tokens=max_tokens, max_seconds=max_seconds)
    hist, thread = lcdoc_app.start_conversation(s, resume, no_log, paths, index, mode, console.log)
    session = ChatSession(thread, s)
    interactive = sys.stdin.isatty()
    if interactive:
        greeting(thread)
    for question in questions(interactive, lcdoc_app.history_path()):
        stream = sys.stdout.isatty() and not as_json
        req = lcdoc_app.AskRequest(question, tuple(thread.paths), thread.index, thread.mode,
                                   tuple(thread.turns), None, stream, s)
        try:
            ans = _answer(req, explain, no_server, session.engine)
        except KeyboardInterrupt:
            if not interactive:
                raise
            session.interrupted()
            continue
        session.remember(ans)
        ans = lcdoc_app.record(hist, thread, question, ans, console.log)
        if as_json:
            render.json_out(ans)
        else:
            render.answer(ans, streamed=stream)
            print(flush=True)
        render.answer_log(ans)


# --- summaries ------------------------------------------------------------------------------
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
    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    req = lcdoc_app.SummarizeRequest(tuple(paths), os.path.abspath(out) if out else None, style,
                                     max_words, prompt, tuple(include), tuple(exclude), parallel,
                                     digest, ray, workers, s)
    with console.progress_bar() as bar:
        events = lcdoc_app.Events(
            result=lambda sm, reused: render.summary(sm, reused, as_json, out is not None),
            failure=render.failure, log=console.log, progress=bar)
        try:
            res = lcdoc_app.run(req, events, no_server or bool(ray))
        except KeyboardInterrupt:
            console.log("interrupted: finished summaries are kept; run again to continue")
            raise typer.Exit(130)
    if res.server:
        console.log(f"summarised by the running server ({res.parallel} side by side)")
    render.digest(res.digest, res.documents, out, as_json)
    console.log(f"{len(res.done)} summarised, {len(res.reused)} reused, {len(res.failed)} failed"
                + (f"; written to {out}" if out else ""))
    if res.failed:
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
    from lcdoc.serve import Server, default_socket

    console.QUIET = quiet
    s = _settings(index_dir=index_dir, model=model, ctx=ctx, kv_type=kv, gpu_layers=gpu_layers)
    path = Path(socket_path).expanduser() if socket_path else default_socket()
    srv = Server(s, path, idle_timeout, int(memory_gb * 2**30) if memory_gb is not None else None,
                 parallel, log=console.log)
    srv.serve(on_ready=render.serving)


# --- history and housekeeping ---------------------------------------------------------------
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
    if n < 1:
        raise UsageError(f"-n {n}: ask for at least one entry")
    hist = lcdoc_app.open_history(log=console.log)
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
        render.json_out(e) if as_json else render.log_entry(e)
        return
    entries = hist.recent(n, search, conversation)
    render.json_out(entries) if as_json else render.log_entries(entries)


@app.command("indexes")
def indexes_cmd(index_dir: IndexDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the indexes: documents, chunks, size on disk, embedding model, last update."""
    s = _settings(index_dir=index_dir)
    found = lcdoc_app.list_indexes(s.index_dir)
    if as_json:
        render.json_out(found)
    elif not found:
        console.log(f"no indexes in {s.index_dir}")
    else:
        render.indexes(found)


@app.command("drop")
def drop_cmd(
    name: Annotated[str, typer.Argument(help="The index's name (`lcdoc indexes` lists them).")],
    index_dir: IndexDirOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (for scripts).")] = False,
) -> None:
    """Delete an index (its folder under the index dir); asks first on a terminal."""
    s = _settings(index_dir=index_dir)
    info = next((i for i in lcdoc_app.list_indexes(s.index_dir) if i.name == name), None)
    if info is None:
        lcdoc_app.drop_index(name, s.index_dir)  # says why it is not an index (a bad name, none there)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"drop {name}: add --yes to delete without asking")
        what = f"{info.documents} documents, {render.size(info.bytes)}" if info else "?"
        if not typer.confirm(f"Delete index {name} ({what})?", default=False, err=True):
            raise typer.Exit(1)
    console.log(f"deleted {lcdoc_app.drop_index(name, s.index_dir)}")


@app.command("cache")
def cache_cmd(
    action: Annotated[Optional[str], typer.Argument(help="clear, or nothing to list.")] = None,
    kind: Annotated[Optional[str], typer.Argument(
        help="prompt, onnx, calibration, ocr, history or all (all: every cache but the history).")] = None,
    index_dir: IndexDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the prompt cache, ONNX exports, calibration profiles and history hold; `cache clear KIND`."""
    s = _settings(index_dir=index_dir)
    if action is None:
        sizes = lcdoc_app.cache_sizes(s.index_dir)
        render.json_out({k: {"path": p, "bytes": b, "files": n} for k, (p, b, n) in sizes.items()}) \
            if as_json else render.caches(sizes)
        return
    if action != "clear":
        raise UsageError(f"cache {action}: the action is clear (or nothing, to list)")
    if kind not in lcdoc_app.CACHE_KINDS + ("all",):
        raise UsageError(f"cache clear {kind or ''}: choose {', '.join(lcdoc_app.CACHE_KINDS)} or all")
    freed = lcdoc_app.clear_cache(kind, s.index_dir)
    if as_json:
        render.json_out(freed)
    for k, b in freed.items():
        console.log(f"cleared {k}: {render.size(b)}")


def _register_evaluations() -> None:
    """`lcdoc eval ...` and `lcdoc bench`: measuring commands, defined beside what they measure."""
    from lcdoc.eval.commands import register

    register(app, _settings)


_register_evaluations()


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
    except SystemExit as e:
        _exit(e.code)
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


def _exit(code) -> None:
    """Exit with code; after a model was loaded, without the interpreter's teardown (freeing
    gigabytes of model and GPU memory, torch's and llama.cpp's own, ~0.3-0.7 s a user would wait
    for nothing): what lcdoc wrote is flushed or committed, and a state still being written
    belongs to a child process."""
    llm = sys.modules.get("lcdoc.engine.llm")  # not imported: no model was loaded
    if llm is None or not llm.fast_exit_wanted():
        raise SystemExit(code)
    llm.finish_writes()
    _mark("exit")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code is not None and not isinstance(code, int):  # SystemExit("message"): say it, exit 1
        print(code, file=sys.stderr, flush=True)
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
