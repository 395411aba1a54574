"""`lcdoc ask`: read the documents once, route the question, run the route's strategy, check the
answer against its sources."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

from lcdoc.qa.answer import Answer, Source, cite, drop_unknown_citations, mark_cited  # noqa: F401
from lcdoc.qa.conversation import INDEX_SHARE, Fitted, fit_history, retrieval_query
from lcdoc.events import debug_mark
from lcdoc.errors import DoesNotFitError, InputFileError, UsageError
from lcdoc.qa.evidence import UNANSWERED, supported
from lcdoc.ingest import Document, load_stdin, read_documents
from lcdoc.qa.protocols import Model
from lcdoc.settings import Settings
from lcdoc.qa.route import Route, choose_route, context_budget
from lcdoc.qa.strategies import (  # noqa: F401  (the names tests and callers import from here)
    STRATEGIES, SYSTEM, AskContext, MergedIndex, all_documents, attribute,
    lost_in_the_middle_order, numbered, rag_passages, stuff_context)


# --- gathering ----------------------------------------------------------------------------
def gather_documents(paths: list[str], stdin_data: bytes | None = None
                     ) -> tuple[list[Document], list[tuple[str, str]]]:
    """Documents from files, folders and '-' (stdin, or stdin_data read already); (path, problem)
    for each that failed."""
    from lcdoc.ingest.loaders import load_bytes

    docs, failed = [], []
    plain = [p for p in paths if p != "-"]
    if "-" in paths:
        try:
            docs.append(load_stdin() if stdin_data is None else load_bytes(stdin_data, "<stdin>"))
        except InputFileError as e:
            failed.append((e.path, e.problem))
    for p in plain:
        if not Path(p).exists():
            raise InputFileError(p, "no such file or folder")
    found, bad = read_documents(plain)
    return docs + found, failed + [(x.path, x.reason) for x in bad]



def adhoc_index(docs: list[Document], s: Settings):
    """The documents given on the command line (stdin included, its pages kept), indexed on the
    fly from what was read, in a cache folder keyed by their content; (index, their paths)."""
    from lcdoc.index import Index, index_documents

    key = hashlib.sha256("".join(sorted(d.sha256 for d in docs)).encode()).hexdigest()[:16]
    idx = Index.open(str(s.index_dir / "_adhoc" / key), create=True, embed_model=s.embed_model,
                     embed_precision=s.embed_precision, embed_runtime=s.embed_runtime)
    index_documents(idx, docs)
    return idx, {d.path for d in idx.store.documents()}


def stuff_limit(eng) -> tuple[int, str]:
    """How many tokens auto may stuff for this engine's model and plan, and why."""
    from lcdoc.qa.profile import stuff_limit as limit_for

    limit, why, _ = limit_for(eng.path, eng.cache_settings, eng.arch.n_ctx_train)
    return limit, why


# --- the main entry -----------------------------------------------------------------------
# Without a max_seconds setting: how long an answer may take before an escalation that would
# read more is not taken (it is said, with how to allow it). A CPU reads a few hundred tokens a
# second, so an escalation to 8K tokens there costs minutes.
MAX_SECONDS_GPU = 600.0
MAX_SECONDS_CPU = 120.0


def ask(
    question: str,
    paths: list[str] | None = None,
    index_name: str | None = None,
    mode: str = "auto",
    engine: Model | None = None,
    settings: Settings | None = None,
    on_text: Callable[[str], None] | None = None,
    on_route: Callable[[Route], None] | None = None,
    stdin_data: bytes | None = None,
    history: list[tuple[str, str]] | None = None,
) -> Answer:
    """Answer a question about files, stdin ('-') and/or an index, with the route chosen per query.

    history: earlier (question, answer) turns of a conversation about the same documents.
    Every second is named in the answer's timings: load_s (the model), read_s (reading and
    tokenising the documents and prompts), retrieve_s, prefill_s, generate_s, evidence_s (quotes
    and the support check) and save_s (prompt-cache states copied out before answering).
    """
    from lcdoc.qa.route import MODES

    started = time.perf_counter()
    s = settings or Settings()
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: choose one of {', '.join(MODES)}")
    if not question.strip():
        raise UsageError("the question is empty")
    timings = {k: 0.0 for k in TIMINGS}
    t0 = time.perf_counter()
    index, docs, failed = _read(list(paths or []), index_name, s, stdin_data)
    timings["read_s"] += time.perf_counter() - t0
    debug_mark("read")
    eng = engine or _load_while_counting(s, docs, timings, ahead=mode != "rag" and not history)
    debug_mark("loaded")
    t0 = time.perf_counter()
    ctx, route = _plan(question, docs, index, mode, eng, s, list(history or []), timings)
    timings["read_s"] += time.perf_counter() - t0
    ctx.started, ctx.on_text = started, on_text
    if on_route:
        on_route(route)
    debug_mark("routed")
    out = STRATEGIES[route.route].run(ctx, route)
    debug_mark("strategy done")
    ans = _finish(ctx, out, route, question, failed, docs, eng, owned=engine is None)
    debug_mark("checked")
    _remember_speed(eng, ctx)
    debug_mark("speed recorded")
    return ans


TIMINGS = ("load_s", "read_s", "retrieve_s", "prefill_s", "generate_s", "evidence_s", "save_s")


def _load(s: Settings):
    from lcdoc.engine.llm import Engine

    return Engine.from_settings(s)


def _load_while_counting(s: Settings, docs: list[Document], timings: dict, ahead: bool = True):
    """The engine, loaded in a thread while this one counts the documents' tokens with the
    model's tokenizer (llama.cpp releases the GIL in both): the count the route needs is ready
    when the model is, and with ahead, so are the tokens of the prompt that stuffs them (when
    they could fit the context). load_s is the whole wait (the work hidden inside it), from the
    import of the engine's modules (numpy, the prompt cache: 0.2 s unnamed on an H200 host)."""
    t0 = time.perf_counter()
    import threading

    from lcdoc.engine.llm import Tokenizer, resolve_model, special_texts

    if not docs:
        eng = _load(s)
        timings["load_s"] = time.perf_counter() - t0
        return eng
    tok = Tokenizer(resolve_model(s.model))  # before the thread: its vocabulary is then shared
    result: dict = {}

    def load() -> None:
        try:
            result["engine"] = _load(s)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            result["error"] = e

    loader = threading.Thread(target=load, name="lcdoc-load", daemon=True)
    loader.start()
    counted = sum(tok.count(stuff_context([d])) for d in docs)
    if ahead and counted <= (s.ctx or tok.n_ctx_train):
        tok.tokenize_prefix_ahead(SYSTEM, stuff_context(docs))
    special_texts(tok.llm)  # what the prompt defuses, kept per model file (50-100 ms at 128K)
    loader.join()
    if "error" in result:
        raise result["error"]
    timings["load_s"] = time.perf_counter() - t0
    return result["engine"]


def _read(paths: list[str], index_name: str | None, s: Settings, stdin_data: bytes | None):
    """(the index or None, the documents read, (path, problem) of those that failed)."""
    index = None
    if index_name:  # only then: lcdoc.index brings numpy and FAISS (0.17 s before the first file)
        from lcdoc.index import Index

        index = Index.from_settings(index_name, s)
    if not paths and index is None:
        raise UsageError("nothing to ask about: give files, '-' for stdin, or --index NAME")
    if index is not None and not paths:
        index.require_documents()
    docs, failed = gather_documents(paths, stdin_data) if paths else ([], [])
    if paths and not docs:
        raise InputFileError(failed[0][0] if failed else paths[0],
                             failed[0][1] if failed else "no readable document")
    return index, docs, failed


def _plan(question: str, docs: list[Document], index, mode: str, eng: Model, s: Settings,
          history: list[tuple[str, str]], timings: dict) -> tuple[AskContext, Route]:
    """The budget, the conversation that fits, the route and its reasons (with each route's
    predicted time), and the context the route's strategy runs in."""
    doc_tokens = sum(eng.count(stuff_context([d])) for d in docs) if docs else None
    limit, why = stuff_limit(eng) if mode == "auto" else (None, "")
    fitted = _fit_conversation(history, question, doc_tokens, limit, eng, s.answer_tokens)
    pre0, suf0, _ = eng.chat_parts(SYSTEM, "", question, fitted.turns)
    budget = context_budget(eng.n_ctx, eng.count(pre0 + suf0) + 32, s.answer_tokens)
    if budget < 256:
        raise DoesNotFitError(f"the {eng.n_ctx}-token context leaves no room for documents after "
                              f"the question and a {s.answer_tokens}-token answer")
    index_tokens, index_docs = _index_size(index, budget, eng)
    route = choose_route(question, budget, doc_tokens, index_tokens, mode, limit, why)
    query = retrieval_query(question, history)
    notes = [fitted.reason] if fitted.reason else []
    if route.route in ("rag", "hybrid") and query != question:
        notes.append(f"retrieval query, with the conversation's last questions: {query!r}")
    speed = _speed(eng)
    notes.append(_predicted(speed, route, budget, doc_tokens, index_tokens, s.answer_tokens))
    route = Route(route.route, route.budget, route.doc_tokens, tuple(route.reasons) + tuple(notes))
    search_index, allowed = _retrieval_target(route.route, docs, index, s)
    ctx = AskContext(question, fitted.turns, eng, docs, index, search_index, allowed, budget,
                     limit, doc_tokens, index_tokens, index_docs, mode, s.answer_tokens, None,
                     timings=timings,
                     tokens={"context": eng.n_ctx, "prompt": 0, "restored": 0, "completion": 0},
                     reasons=list(route.reasons), query=query, speed=speed,
                     max_seconds=_max_seconds(s, eng))
    return ctx, route


def _max_seconds(s: Settings, eng: Model) -> float:
    if s.max_seconds is not None:
        return s.max_seconds
    return MAX_SECONDS_GPU if getattr(eng.plan, "device", "cpu") == "cuda" else MAX_SECONDS_CPU


def _speed(eng: Model):
    from lcdoc.engine.speed import Speed, lookup, plan_key

    try:
        return lookup(plan_key(eng), eng.arch.attention_cost)
    except AttributeError:  # an engine without a plan (a test's small one)
        return Speed(None, None)


def _predicted(speed, route: Route, budget: int, doc_tokens: int | None,
               index_tokens: int | None, answer_tokens: int) -> str:
    """Each route's predicted time, beside what it reads (--explain)."""
    if not speed.prefill_tok_s or not speed.decode_tok_s:
        return ("predicted time: no speed measured yet for this model and plan here (each "
                "answer measures it)")
    whole = (doc_tokens or 0) + (index_tokens or 0)
    first = min(budget, max(1024, budget // 4))
    parts = []
    if whole and whole <= budget:
        parts.append(f"stuff {whole:,} tokens (everything, in order) ~{speed.predict(whole, answer_tokens):.1f} s")
    parts.append(f"rag {first:,} tokens of passages (may miss what they leave out) "
                 f"~{speed.predict(first, answer_tokens):.1f} s, escalating to {budget:,} "
                 f"~{speed.predict(budget, answer_tokens):.1f} s more")
    how = ("fitted to prompts measured here" if speed.fitted else "estimated from the model's "
           "shape until prompts of other lengths are measured")
    return (f"predicted time at the measured {speed.prefill_tok_s:,.0f} prefill tokens/s at the "
            f"start of the context (slower further in, attention {how}) and "
            f"{speed.decode_tok_s:,.1f} answer tokens/s: " + "; ".join(parts))


def _finish(ctx: AskContext, out, route: Route, question: str, failed: list, docs: list[Document],
            eng: Model, owned: bool) -> Answer:
    """The answer with unknown citations removed and its support checked."""
    from lcdoc.engine.plan import plan_report

    text, dropped = drop_unknown_citations(out.text, out.sources)
    if dropped:
        ctx.reasons.append("removed citation(s) " + ", ".join(f"[{n}]" for n in dropped)
                           + ": no source has that number")
    t0 = time.perf_counter()
    ok = bool(UNANSWERED.search(text)) or supported(text, question, out.given)
    ctx.timings["evidence_s"] += time.perf_counter() - t0
    if not ok:
        ctx.reasons.append("no source sentence holds what the answer claims: treat it as unsupported")
    return Answer(
        answer=text, route=route.route, escalated=out.escalated, sources=tuple(out.sources),
        tokens=ctx.tokens, timings=ctx.timings, model=str(eng.path),
        plan=plan_report(eng.arch, eng.plan)["plan"], reasons=tuple(ctx.reasons),
        failed=tuple(failed), supported=ok, engine=eng if owned else None,
        documents=tuple((d.path, d.sha256) for d in docs), question=question,
        not_read=ctx.not_read)


def _remember_speed(eng: Model, ctx: AskContext) -> None:
    """This answer's prefill and decode speed, into the book the next prediction reads."""
    from lcdoc.engine.speed import plan_key, record

    try:
        key, prior = plan_key(eng), eng.arch.attention_cost
    except AttributeError:
        return
    record(key, ctx.last_prefill_tokens, ctx.last_prefill_s, ctx.tokens["completion"],
           ctx.timings["generate_s"], prior, ctx.last_prefill_start)


def _fit_conversation(turns: list[tuple[str, str]], question: str, doc_tokens: int | None,
                      limit: int | None, eng, answer_tokens: int) -> Fitted:
    """The earlier turns this prompt carries: the documents keep their room when they are to be
    stuffed, and the conversation gets what is left (a share of the context over an index)."""
    if not turns:
        return Fitted([], 0, "")
    pre, suf, _ = eng.chat_parts(SYSTEM, "", question, [])
    bare = context_budget(eng.n_ctx, eng.count(pre + suf) + 32, answer_tokens)
    stuffable = doc_tokens is not None and doc_tokens <= min(bare, limit or bare)
    room = max(0, bare - doc_tokens - 16 if stuffable else int(eng.n_ctx * INDEX_SHARE))
    # What the template adds per turn, measured on this conversation rendered whole.
    whole, _, _ = eng.chat_parts(SYSTEM, "", question, turns)
    raw = sum(eng.count(q) + eng.count(a) for q, a in turns)
    overhead = max(8, -(-(eng.count(whole) - eng.count(pre) - raw) // len(turns)) + 1)
    limit_room = room
    for _ in range(4):  # the estimate is close; the rendered prompt decides
        fitted = fit_history(turns, room, eng.count, overhead)
        pre_h, suf_h, _ = eng.chat_parts(SYSTEM, "", question, fitted.turns)
        over = context_budget(eng.n_ctx, eng.count(pre_h + suf_h) + 32, answer_tokens) - \
            (bare - limit_room)
        if over >= 0:
            break
        room = max(0, room + 2 * over)
    return fitted


def _index_size(index, budget: int, eng) -> tuple[int | None, list[Document] | None]:
    """The index's size in the model's tokens: estimated from its counts, and counted exactly
    (reading its documents, which a stuffed route then uses) when it is near the budget."""
    if index is None:
        return None, None
    c = index.store.counts()
    estimate = c["tokens"] + 12 * c["chunks"]
    if estimate >= 2 * budget:
        return estimate, None
    docs = all_documents(index)
    return sum(eng.count(stuff_context([d])) for d in docs), docs


def _retrieval_target(route: str, docs: list[Document], index, s):
    """What a retrieving route searches, and which paths it may return: the index; the named
    files indexed on the fly; or both, merged (hybrid stuffs the files and searches the index)."""
    if route != "rag" or not docs:
        return index, None
    adhoc, allowed = adhoc_index(docs, s)
    if index is None:
        return adhoc, allowed
    return MergedIndex([index, adhoc]), None
