"""What the CLI prints: each result as text for a reader, or as JSON for a script (one renderer,
`json_out`, for every --json). Data goes to stdout; notes and errors to stderr."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from lcdoc import console


def json_out(obj: Any, indent: int | None = None) -> None:
    """One JSON document on stdout: a result's as_json(), or plain data (lists of results too)."""
    import dataclasses

    def plain(x: Any) -> Any:
        if hasattr(x, "as_json"):
            return x.as_json()
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return dataclasses.asdict(x)
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    print(json.dumps(plain(obj), indent=indent), flush=True)


def display(path: str) -> str:
    """A stored absolute path shown relative to the working directory when it is under it,
    control characters escaped (console.safe)."""
    try:
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    except ValueError:
        shown = path
    return console.safe(shown)


def failure(path: str, why: str) -> None:
    console.err.print(f"lcdoc: error: {display(path)}: {console.safe(why)}", markup=False,
                      highlight=False)


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


# --- index and search -----------------------------------------------------------------------
def index_notes(res: Any) -> None:
    """What an index run left out, kept, removed or could not read: one line each, on stderr."""
    rep = res.report
    for sk in rep.skipped:
        console.log(f"skipped {display(sk.path)}: {console.safe(sk.reason)}")
    for k in rep.kept:
        console.err.print(f"lcdoc: warning: {display(k.path)}: {k.reason}", markup=False,
                          highlight=False)
    for p in rep.removed_paths:
        console.log(f"removed {display(p)}: the file no longer exists")
    for f in rep.failed:
        failure(f.path, f.reason)


def index_line(res: Any) -> None:
    rep, total = res.report, res.total
    rate = rep.chunks / rep.seconds if rep.seconds else 0.0
    print(f"{res.folder}: {rep.indexed} files indexed ({rep.unchanged} unchanged, {rep.removed} "
          f"removed, {len(rep.failed)} failed, {len(rep.skipped)} skipped), {rep.pages} pages, "
          f"{rep.chunks} chunks, {rep.tokens} tokens in {rep.seconds:.1f} s ({rate:.1f} chunks/s); "
          f"index holds {total['documents']} documents, {total['chunks']} chunks "
          f"({rep.vector_index} vectors)")


def hits(found: Any) -> None:
    for n, h in enumerate(found.hits, 1):
        where = display(h.path)
        if h.page is not None:
            where += f" p. {h.page}" + (f"-{h.page_end}" if h.page_end != h.page else "")
        if h.heading:
            where += f"  § {console.safe(h.heading)}"
        snippet = console.safe(" ".join(h.text.split()))
        snippet = snippet[:300] + ("…" if len(snippet) > 300 else "")
        console.out.print(f"[bold]{n}.[/bold] [cyan]{escape(where)}[/cyan]  "
                          f"[dim]score {h.score:.4f}[/dim]")
        console.out.print(f"   {snippet}", markup=False)


# --- answers --------------------------------------------------------------------------------
def answer(ans: Any, streamed: bool) -> None:
    """The answer (unless it was streamed already) and its sources."""
    if not streamed:
        print(ans.answer)
    sources(ans)


def sources(ans: Any) -> None:
    """The cited sources in [n] order, each quote on one line; all of them, said once, when
    the answer cites none (--json keeps every source, as it was)."""
    if not ans.supported:
        print("\n(No source sentence holds what this answer claims: check it before relying on it.)")
    if not ans.sources:
        return
    cited = [s for s in ans.sources if s.cited]
    print("\nSources:" if cited else "\nSources (the answer cites none by number; all it was given):")
    for src in sorted(cited or ans.sources, key=lambda s: s.n):
        print(f"  [{src.n}] {src.label_for(display(src.path))}")
        if src.quote:
            print(f"      \u201c{shorten(console.safe(src.quote), 96)}\u201d")


def answer_log(ans: Any) -> None:
    t, n = ans.timings, ans.tokens
    console.log(f"{ans.route}{' (escalated)' if ans.escalated else ''}"
                f"{', server' if ans.server else ''}: {n['prompt']} prompt tokens "
                f"({n.get('restored', 0)} restored) + {n['completion']} answer tokens; retrieve "
                f"{t['retrieve_s']:.1f} s, prefill {t['prefill_s']:.2f} s, generate "
                f"{t['generate_s']:.1f} s")


def explain(ans: Any, where: str) -> None:
    """--explain's notes after the answer: an escalation, and who answered."""
    if ans.escalated:
        console.err.print(f"  - {ans.reasons[-1]}", markup=False)
    console.err.print(f"  - {where}", markup=False)


def route(r: Any, reasons: bool) -> None:
    console.log(f"route: {r.route}")
    if reasons:
        for reason in r.reasons:
            console.err.print(f"  - {reason}", markup=False)


def streamed_text(t: str) -> None:
    sys.stdout.write(t)
    sys.stdout.flush()


# --- summaries ------------------------------------------------------------------------------
def summary(sm: Any, reused: bool, as_json: bool, to_files: bool) -> None:
    """One document's summary as it finishes (a JSON line, or Markdown unless --out has it)."""
    if as_json:
        print(json.dumps(sm.as_json()), flush=True)
    elif not to_files:
        print(f"## {display(sm.path)}\n\n{sm.summary}\n", flush=True)
    console.log(f"{'reused' if reused else 'summarised'} {display(sm.path)} ({sm.route}, "
                f"{sm.tokens} tokens, {sm.seconds:.1f} s)")


def digest(text: str | None, documents: list[str], out: Path | None, as_json: bool) -> None:
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


# --- the plan -------------------------------------------------------------------------------
def plan(arch: Any, p: Any, report: dict, effective: str) -> None:
    from rich.table import Table

    from lcdoc.engine.plan import KV_TYPES, fmt_bytes, kv_table

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
    table = Table(title="KV cache size" + (" (window layers at their window)" if arch.swa_layers
                                            and not p.swa_full else ""))
    table.add_column("context", justify="right")
    for t in KV_TYPES:
        table.add_column(t, justify="right")
    for c, row in kv_table(arch, sorted({4096, 32768, 131072, p.n_ctx}), p.swa_full).items():
        table.add_row(f"{c:,}{' *' if c == p.n_ctx else ''}", *(fmt_bytes(row[t]) for t in KV_TYPES))
    console.out.print(table)
    console.out.print(f"[bold]Plan[/bold]: {escape(p.summary(bool(arch.swa_layers)))}")
    for i, b in p.gpu_bytes:
        console.out.print(f"  GPU {i}: {fmt_bytes(b)} planned"
                          + (f" ({p.tensor_split[i]:.0%} of the layers)" if p.tensor_split else ""))
    for r in p.reasons:
        console.out.print(f"  - {r}", markup=False)
    console.out.print(f"  - {effective}", markup=False)


def calibration(prof: Any) -> None:
    from lcdoc.qa.profile import THRESHOLD

    print(f"{Path(prof.model).name} at n_ctx {prof.n_ctx} ({prof.settings})")
    print("| length | found |\n|---:|---:|")
    for length, share in sorted(prof.grid.items(), key=lambda x: int(x[0])):
        print(f"| {int(length):,} | {share:.0%} |")
    print(f"effective length: {prof.effective_length:,} tokens (every length up to it found the "
          f"fact at {THRESHOLD:.0%} of depths or more); {prof.seconds:.0f} s")


def checks(found: dict) -> None:
    for name, (ok, detail) in found.items():
        mark = "[green]ok[/green]  " if ok else ("[yellow]--[/yellow]  " if ok is None
                                                else "[red]FAIL[/red]")
        console.out.print(f"{mark} {name}: {detail}")


# --- history and housekeeping ---------------------------------------------------------------
def log_entries(entries: list) -> None:
    for e in entries:
        print(f"{e.id:>5}  {when(e.time)}  {e.conversation} #{e.turn}  {e.route:<10} "
              f"{console.safe(shorten(e.question, 60))}")
        print(f"{'':>7}{console.safe(shorten(e.answer, 90))}")


def log_entry(e: Any) -> None:
    print(f"entry {e.id}, conversation {e.conversation} turn {e.turn}, {when(e.time)}")
    print(f"route {e.route}, model {Path(e.model).name}")
    where = ", ".join(display(p) for p in e.paths) or "-"
    print(f"documents: {where}" + (f"; index {e.index_name}" if e.index_name else ""))
    print(f"\nQ: {console.safe(e.question)}\n\n{e.answer}")
    if e.sources:
        print("\nSources:")
        for src in e.sources:
            page = f" p. {src['page']}" if src.get("page") else ""
            head = f" § {console.safe(src['heading'])}" if src.get("heading") else ""
            print(f"  [{src['n']}] {display(src['path'])}{page}{head}")
            if src.get("quote"):
                print(f"      \u201c{console.safe(src['quote'])}\u201d")


def indexes(found: list) -> None:
    print(f"{'name':<20} {'documents':>9} {'chunks':>8} {'size':>9}  {'embedding':<26} updated")
    for i in found:
        model = f"{i.embed_model.rsplit('/', 1)[-1][:20]} {i.embed_precision}".strip()
        print(f"{console.safe(i.name):<20} {i.documents:>9} {i.chunks:>8} {size(i.bytes):>9}  "
              f"{model:<26} {when(i.updated) if i.updated else '-'}"
              + (f"  ({i.problem})" if i.problem else ""))


def caches(sizes: dict) -> None:
    for k, (p, b, n) in sizes.items():
        print(f"{k:<12} {size(b):>9} {n:>6} file(s)  {console.safe(p)}")


def serving(d: dict) -> None:
    """The line `lcdoc serve` prints once it listens (always: scripts wait for it)."""
    from lcdoc.engine.plan import fmt_bytes

    console.err.print(
        f"lcdoc serve: ready on {d['socket']} (pid {d['pid']}; {Path(d['model']).name}, "
        f"n_ctx {d['n_ctx']}, KV {d['kv']}, {d['device']}, {d['n_seq']} sequence(s); document "
        f"states up to {fmt_bytes(d['memory_budget_bytes'])} in memory; idle timeout "
        f"{d['idle_timeout_s']:g} s)", markup=False, highlight=False)
