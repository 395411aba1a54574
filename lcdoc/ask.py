"""`lcdoc ask`: gather the documents, route the question, build a numbered context, answer with citations."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lcdoc.errors import DoesNotFitError, InputFileError, UsageError
from lcdoc.ingest import Document, load_stdin, read_documents
from lcdoc.evidence import best_quote, supported
from lcdoc.route import Route, choose_route, context_budget

SYSTEM = (
    "You answer questions about documents. Use only the numbered sources below and cite the "
    "ones you use in square brackets, like [1]. If the sources do not contain the answer, say "
    "\"The sources do not contain the answer.\""
)
# Instructions, question and chat-template tokens around the documents; measured per question.
UNANSWERED = re.compile(
    r"(do(es)? not contain|doesn't contain|no (information|mention)|not (mentioned|provided|stated|"
    r"found|specified)|cannot (answer|find|determine)|can't (answer|find)|unable to (answer|find)|"
    r"i don't know|not enough information)", re.I)
STOP = frozenset("a an the of to in on and or is are was were be by for with that this it as at "
                 "from which what who when where how why do does did".split())


@dataclass(frozen=True)
class Source:
    """A cited place: document path, page, heading, and how strongly it was retrieved."""

    n: int
    path: str
    page: int | None
    heading: str
    score: float
    cited: bool = True  # False: given to the model, but the answer does not cite it
    page_end: int | None = None  # last page of the text given, when it spans several
    quote: str = ""  # the sentence(s) of its text that carry the answer (lcdoc/evidence.py)

    @property
    def label(self) -> str:
        return self.label_for(self.path)

    def label_for(self, shown_path: str) -> str:
        """The one citation format: path, page, section."""
        if self.page and self.page_end and self.page_end != self.page:
            where = f"{shown_path} pp. {self.page}-{self.page_end}"
        else:
            where = shown_path + (f" p. {self.page}" if self.page else "")
        return where + (f" § {self.heading}" if self.heading else "")


@dataclass(frozen=True)
class Answer:
    """Everything `lcdoc ask --json` prints."""

    answer: str
    route: str
    escalated: bool
    sources: tuple[Source, ...]
    tokens: dict
    timings: dict
    model: str
    plan: dict
    reasons: tuple[str, ...] = field(default=())
    failed: tuple[tuple[str, str], ...] = field(default=())  # (path, problem) of unreadable files
    server: bool = False  # answered by a running `lcdoc serve`
    supported: bool = True  # some source sentence holds what the answer claims
    # The in-process engine that answered, so the caller can save its state after printing.
    engine: object = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict:
        return {
            "answer": self.answer, "route": self.route, "escalated": self.escalated,
            "sources": [{"n": s.n, "path": s.path, "page": s.page, "heading": s.heading,
                         "page_end": s.page_end or s.page, "score": round(s.score, 6),
                         "cited": s.cited, "quote": s.quote} for s in self.sources],
            "supported": self.supported,
            "tokens": self.tokens, "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "model": self.model, "plan": self.plan, "reasons": list(self.reasons),
            "failed": [{"path": p, "reason": r} for p, r in self.failed], "server": self.server,
        }

    @classmethod
    def from_json(cls, d: dict) -> "Answer":
        """The Answer a server sent (as_json's inverse, without the engine)."""
        return cls(d["answer"], d["route"], d["escalated"],
                   tuple(Source(x["n"], x["path"], x["page"], x["heading"], x["score"],
                                x.get("cited", True), x.get("page_end"), x.get("quote", ""))
                         for x in d["sources"]),
                   d["tokens"], d["timings"], d["model"], d["plan"],
                   tuple(d.get("reasons", ())),
                   tuple((f["path"], f["reason"]) for f in d.get("failed", ())),
                   bool(d.get("server")), bool(d.get("supported", True)))


@dataclass
class _Passage:
    path: str
    text: str
    page: int | None
    heading: str
    score: float
    start: int = 0
    page_end: int | None = None


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


def stuff_context(docs: list[Document]) -> str:
    """Whole documents in order, numbered, with page markers so the answer can cite pages."""
    parts = []
    for i, d in enumerate(docs, 1):
        if d.page_starts:
            pages = [f"[page {p}]\n{d.page_text(p).strip()}" for p in range(1, d.n_pages + 1)]
            body = "\n\n".join(pages)
        else:
            body = d.text
        parts.append(f"[{i}] {d.path}\n{body}")
    return "\n\n".join(parts)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in STOP and len(w) > 1}


def attribute(answer: str, docs: list[Document], question: str, top: int = 3) -> list[Source]:
    """For stuffed documents: the pages (or sections) whose words the answer and question share most."""
    if UNANSWERED.search(answer):  # the answer says the sources lack it: attribute nothing to them
        return [Source(i, d.path, None, "", 0.0, cited=False) for i, d in enumerate(docs, 1)]
    want = _words(answer) | _words(question)
    if not want:
        return [Source(i, d.path, None, "", 0.0) for i, d in enumerate(docs, 1)]
    from lcdoc.ingest import chunk_document

    scored = []
    for i, d in enumerate(docs, 1):
        if d.page_starts:
            units = [(p, "", d.page_text(p)) for p in range(1, d.n_pages + 1)]
        else:
            units = [(None, c.heading, c.text) for c in chunk_document(d, 256, 0)]
        for page, heading, text in units:
            w = _words(text)
            ans_hits = len(_words(answer) & w)
            score = (2 * ans_hits + len(_words(question) & w)) / (len(want) * 2 or 1)
            scored.append((score, i, d.path, page, heading, text))
    scored.sort(key=lambda x: -x[0])
    out, seen = [], set()
    for score, i, path, page, heading, text in scored:
        if (path, page, heading) in seen or score <= 0:
            continue
        seen.add((path, page, heading))
        out.append(Source(i, path, page, heading, score,
                          quote=best_quote(answer, question, text).text))
        if len(out) == top:
            break
    return out or [Source(i, d.path, None, "", 0.0) for i, d in enumerate(docs, 1)]


def lost_in_the_middle_order(items: list) -> list:
    """Best items at both ends, weakest in the middle (Liu et al., 2023): 1, 3, 5, ..., 6, 4, 2."""
    return items[0::2] + items[1::2][::-1]


def rag_passages(index, question: str, budget: int, count: Callable[[str], int],
                 paths: set[str] | None = None, radius: int = 1) -> tuple[list[_Passage], float]:
    """Hybrid hits expanded to their neighbours, merged, filling the budget; (passages, seconds)."""
    t0 = time.perf_counter()
    hits = index.search(question, k=40)
    if paths is not None:
        hits = [h for h in hits if h.path in paths]
    used: dict[str, list[tuple[int, int]]] = {}
    passages: list[_Passage] = []
    spent = 0
    docs: dict[str, Document] = {}
    for h in hits:
        if any(a <= h.start and h.end <= b for a, b in used.get(h.path, [])):
            continue
        group = index.neighbours(h, radius)
        a = min(g.start for g in group)
        b = max(g.end for g in group)
        if h.path not in docs:
            docs[h.path] = index.store.document(h.path)
        doc = docs[h.path]
        text = doc.text[a:b] if doc else "\n".join(g.text for g in group)
        head = count(f"[99] ({h.path}, pages 999-999, § {h.heading})\n") + 2
        n = count(text) + head
        if spent + n > budget:
            a, b, text = h.start, h.end, h.text  # the hit alone, without its neighbours
            n = count(text) + head
            if spent + n > budget:
                continue
        used.setdefault(h.path, []).append((a, b))
        # The pages of the text given to the model, which may start in a neighbour of the hit.
        page = doc.page_at(a) if doc else h.page_start
        page_end = doc.page_at(max(a, b - 1)) if doc else h.page_end
        passages.append(_Passage(h.path, text.strip(), page, h.heading, h.score, a, page_end))
        spent += n
        if spent >= budget * 0.97:
            break
    return lost_in_the_middle_order(passages), time.perf_counter() - t0


def numbered(passages: list[_Passage], offset: int = 0) -> str:
    """Passages as [n] (path, page, § heading) blocks; n continues after `offset` stuffed documents."""
    out = []
    for i, p in enumerate(passages, offset + 1):
        pages = (f", pages {p.page}-{p.page_end}" if p.page and p.page_end and p.page_end != p.page
                 else f", page {p.page}" if p.page else "")
        where = p.path + pages + (f", § {p.heading}" if p.heading else "")
        out.append(f"[{i}] ({where})\n{p.text}")
    return "\n\n".join(out)


def _adhoc_index(docs: list[Document], index_dir: Path, embed_model: Path | None):
    """Index documents given on the command line, on the fly, in a cache keyed by their content."""
    from lcdoc.index import Index, update_index

    key = hashlib.sha256("".join(sorted(d.sha256 for d in docs)).encode()).hexdigest()[:16]
    folder = index_dir / "_adhoc" / key
    src = folder / "docs"
    src.mkdir(parents=True, exist_ok=True)
    idx = Index.open(str(folder), create=True, embed_model=embed_model)
    paths = []
    for d in docs:
        if Path(d.path).is_file():
            paths.append(Path(d.path))
        else:  # stdin: keep its text as a file so the index can cite and re-read it
            p = src / f"stdin-{d.sha256[:12]}.txt"
            p.write_text(d.text)
            paths.append(p)
    update_index(idx, paths)
    return idx, {str(p.resolve()) for p in paths}


# --- the main entry -----------------------------------------------------------------------
def ask(
    question: str,
    paths: list[str] | None = None,
    index_name: str | None = None,
    mode: str = "auto",
    engine=None,
    settings=None,
    on_text: Callable[[str], None] | None = None,
    on_route: Callable[[Route], None] | None = None,
    stdin_data: bytes | None = None,
    history: list[tuple[str, str]] | None = None,
) -> Answer:
    """Answer a question about files, stdin ('-') and/or an index, with the route chosen per query.

    history: earlier (question, answer) turns of a conversation about the same documents.
    """
    from lcdoc.engine.llm import Engine
    from lcdoc.engine.plan import plan_report
    from lcdoc.index import Index
    from lcdoc.route import MODES
    from lcdoc.settings import load_settings

    s = settings or load_settings()
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: choose one of {', '.join(MODES)}")
    if not question.strip():
        raise UsageError("the question is empty")
    paths = list(paths or [])
    index = Index.open(index_name, s.index_dir, embed_model=s.embed_model, allow_path=False) if index_name else None
    if not paths and index is None:
        raise UsageError("nothing to ask about: give files, '-' for stdin, or --index NAME")
    docs, failed = gather_documents(paths, stdin_data) if paths else ([], [])
    if paths and not docs:
        raise InputFileError(failed[0][0] if failed else paths[0],
                             failed[0][1] if failed else "no readable document")

    eng = engine or Engine(s.model, n_ctx=s.ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                           cache_dir=s.index_dir / ".prompt-cache", n_threads=s.threads,
                           disk_bytes=s.prompt_cache_bytes)
    answer_tokens = s.answer_tokens
    history = list(history or [])
    pre0, suf0, _ = eng.chat_parts(SYSTEM, "", question, history)
    overhead = eng.count(pre0 + suf0) + 32
    budget = context_budget(eng.n_ctx, overhead, answer_tokens)
    if budget < 256:
        raise DoesNotFitError(f"the {eng.n_ctx}-token context leaves no room for documents after "
                              f"the question and a {answer_tokens}-token answer")

    doc_tokens = sum(eng.count(stuff_context([d])) for d in docs) if docs else None
    index_tokens, index_docs = None, None
    if index is not None:
        c = index.store.counts()
        index_tokens = c["tokens"] + 12 * c["chunks"]
        if index_tokens < 2 * budget:  # near the line: read it and count exactly, as stuffed
            index_docs = _all_documents(index)
            index_tokens = sum(eng.count(stuff_context([d])) for d in index_docs)
    limit, why = stuff_limit(eng) if mode == "auto" else (None, "")
    route = choose_route(question, budget, doc_tokens, index_tokens, mode, limit, why)
    if on_route:
        on_route(route)

    timings = {"retrieve_s": 0.0, "prefill_s": 0.0, "generate_s": 0.0}
    # restored: prompt tokens taken from a resident or cached state rather than prefilled
    tokens = {"context": eng.n_ctx, "prompt": 0, "restored": 0, "completion": 0}
    reasons = list(route.reasons)

    def generate(context: str, stream: bool = True) -> str:
        prefix, suffix, stops = eng.chat_parts(SYSTEM, context, question, history)
        comp = eng.complete(prefix, suffix, max_tokens=answer_tokens, stop=stops,
                            on_text=on_text if stream else None)
        tokens["restored"] += comp.n_cached
        timings["prefill_s"] += comp.prefill_s
        timings["generate_s"] += comp.generate_s
        tokens["prompt"] += comp.n_prompt
        tokens["completion"] += comp.n_completion
        return comp.text.strip()

    escalated = False
    r = route.route
    if r == "stuff":
        total = doc_tokens if docs else index_tokens  # named files, else the whole index
        if total > budget:
            raise DoesNotFitError(f"--mode stuff: the documents ({total} tokens) do not "
                                  f"fit the {budget}-token budget of a {eng.n_ctx}-token context")
        if not docs:
            docs = index_docs if index_docs is not None else _all_documents(index)
        text = generate(stuff_context(docs))
        sources = attribute(text, docs, question)
    elif r == "map-reduce":
        if not docs:
            docs = index_docs if index_docs is not None else _all_documents(index)
        text, sources = map_reduce(question, docs, eng, route.budget, generate_fn=generate,
                                   on_text=on_text)
    else:
        # rag (and hybrid): first a modest retrieval budget, the SELF-ROUTE escalation after.
        stuffed: list[Document] = []
        search_index, allowed = index, None
        if r == "hybrid":
            stuffed = docs
        elif docs:
            adhoc, allowed = _adhoc_index(docs, s.index_dir, s.embed_model)
            if index is None:
                search_index = adhoc
            else:  # rag over both: search each and merge by score
                search_index = _MergedIndex([index, adhoc])
                allowed = None
        room = budget - (eng.count(stuff_context(stuffed)) if stuffed else 0)
        # A focused first pass: small models answer best from a few strong passages, and it is
        # cheap; the SELF-ROUTE escalation below widens it when the answer says it is missing.
        first = room if r == "hybrid" else min(room, max(1024, room // 4))
        # The first pass takes hits alone; neighbours come with the escalation's wider budget.
        passages, secs = rag_passages(search_index, question, first, eng.count, allowed, radius=0)
        timings["retrieve_s"] += secs
        context = (stuff_context(stuffed) + "\n\n" if stuffed else "")
        offset = len(stuffed)
        context += numbered(passages, offset)
        streamed = on_text if first == room else None
        text = generate(context, stream=streamed is not None)
        whole: list[Document] | None = None
        given = [d.text for d in stuffed] + [p.text for p in passages]
        refused = bool(UNANSWERED.search(text))
        unsupported = mode == "auto" and not refused and not supported(text, question, given)
        if (refused or unsupported) and first < room:
            escalated = True
            why = ("said the sources lack it" if refused else
                   "claims what no passage sentence holds (quoted evidence)")
            # Whole documents only within what the model reads reliably (the stuff limit).
            if r == "rag" and (doc_tokens or 0) + (index_tokens or 0) <= min(room, limit or room):
                whole = list(docs)
                if index is not None:
                    whole += index_docs if index_docs is not None else _all_documents(index)
            if whole is not None:  # SELF-ROUTE proper: the whole fits, so give the model all of it
                reasons.append(f"SELF-ROUTE: the answer from {first} tokens of passages {why}; "
                               f"the documents fit the {room}-token budget, so they were stuffed "
                               f"whole and asked again")
                text = generate(stuff_context(whole))
            else:
                reasons.append(f"SELF-ROUTE: the answer from {first} tokens of passages {why}; "
                               f"retried with the full {room}-token budget")
                passages, secs = rag_passages(search_index, question, room, eng.count, allowed)
                timings["retrieve_s"] += secs
                text = generate(numbered(passages))  # rag only: hybrid's first pass is already full
        elif not streamed and on_text:
            on_text(text)
        if whole is not None:
            sources, given = attribute(text, whole, question), [d.text for d in whole]
        else:
            offset = 0 if escalated else offset  # the escalated retry numbers passages from 1
            stuffed = [] if escalated else stuffed
            given = [d.text for d in stuffed] + [p.text for p in passages]
            sources = [Source(i, d.path, None, "", 1.0, quote=best_quote(text, question, d.text).text)
                       for i, d in enumerate(stuffed, 1)] + [
                Source(offset + i, p.path, p.page, p.heading, p.score, page_end=p.page_end,
                       quote=best_quote(text, question, p.text).text)
                for i, p in enumerate(passages, 1)]
            sources = mark_cited(text, sources)
    if r in ("stuff", "map-reduce"):
        given = [d.text for d in docs]
    text, dropped = drop_unknown_citations(text, sources)
    if dropped:
        reasons.append("removed citation(s) " + ", ".join(f"[{n}]" for n in dropped)
                       + ": no source has that number")
    ok = bool(UNANSWERED.search(text)) or supported(text, question, given)
    if not ok:
        reasons.append("no source sentence holds what the answer claims: treat it as unsupported")
    return Answer(
        answer=text, route=r, escalated=escalated, sources=tuple(sources), tokens=tokens,
        timings=timings, model=str(eng.path), plan=plan_report(eng.arch, eng.plan)["plan"],
        reasons=tuple(reasons), failed=tuple(failed), supported=ok,
        engine=None if engine else eng,
    )


def drop_unknown_citations(answer: str, sources: list[Source]) -> tuple[str, list[int]]:
    """The answer without [n] markers that name no source (a small model invents some)."""
    known = {s.n for s in sources}
    dropped = sorted({int(n) for n in re.findall(r"\[(\d+)\]", answer)} - known)
    if not dropped:
        return answer, []
    text = re.sub(r"\s?\[(\d+)\]", lambda m: "" if int(m.group(1)) in dropped else m.group(0), answer)
    return text, dropped


def stuff_limit(eng) -> tuple[int, str]:
    """How many tokens auto may stuff for this engine's model and plan, and why."""
    from lcdoc.calibrate import load_profile
    from lcdoc.route import default_stuff_limit

    prof = load_profile(eng.path, eng.cache_settings)
    if prof is not None:
        return prof.effective_length, "calibrated: " + prof.summary()
    native = eng.arch.n_ctx_train
    limit = default_stuff_limit(native)
    return limit, (f"not calibrated: stuffing up to {limit} tokens, half the native {native}-token "
                   f"context (the default; `lcdoc calibrate` measures this model and plan)")


def _all_documents(index) -> list[Document]:
    """Every document of an index, whole, for stuffing or a map-reduce."""
    return [index.store.document(d.path) for d in index.store.documents()]


def mark_cited(answer: str, sources: list[Source]) -> list[Source]:
    """Sources in their numbered order (the [n] the model saw), each marked cited or not. An
    answer that cites no number at all leaves them all unmarked (cited)."""
    import dataclasses

    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    if not cited:
        return sources
    return [dataclasses.replace(s, cited=s.n in cited) for s in sources]


class _MergedIndex:
    """Search several indexes as one (an index plus files indexed on the fly)."""

    def __init__(self, indexes: list) -> None:
        self.indexes = indexes

    def search(self, query: str, k: int = 10):
        hits = [h for idx in self.indexes for h in idx.search(query, k=k)]
        return sorted(hits, key=lambda h: -h.score)[:k]

    def _owner(self, path: str):
        for idx in self.indexes:
            if idx.store.document(path) is not None:
                return idx
        return self.indexes[0]

    def neighbours(self, hit, radius: int = 1):
        return self._owner(hit.path).neighbours(hit, radius)

    @property
    def store(self):
        return _MergedStore(self)


class _MergedStore:
    def __init__(self, merged: _MergedIndex) -> None:
        self.merged = merged

    def document(self, path: str):
        return self.merged._owner(path).store.document(path)


def map_reduce(question: str, docs: list[Document], eng, budget: int,
               generate_fn: Callable[..., str], on_text: Callable[[str], None] | None = None
               ) -> tuple[str, list[Source]]:
    """Notes on each context-sized part, then the answer over the notes (level by level if needed)."""
    from lcdoc.ingest import chunk_document

    def count_many(texts):
        return [eng.count(t) for t in texts]

    part_budget = max(256, int(budget * 0.8))
    notes: list[_Passage] = []
    for d in docs:
        for c in chunk_document(d, part_budget, 0, count_tokens=count_many):
            prefix, suffix, stops = eng.chat_parts(
                "Write short notes on what this part of a document says that helps answer the "
                "question. Keep names, numbers and page markers.", f"{c.text}", question)
            comp = eng.complete(prefix, suffix, max_tokens=160, stop=stops, cache_prefix=False)
            notes.append(_Passage(d.path, comp.text.strip(), c.page_start, c.heading, 1.0))
    while sum(eng.count(n.text) + 24 for n in notes) > budget and len(notes) > 1:
        merged = []
        for i in range(0, len(notes), 4):
            group = notes[i : i + 4]
            prefix, suffix, stops = eng.chat_parts("Combine these notes into shorter notes.",
                                                   numbered(group), question)
            comp = eng.complete(prefix, suffix, max_tokens=200, stop=stops, cache_prefix=False)
            merged.append(_Passage(group[0].path, comp.text.strip(), group[0].page,
                                   group[0].heading, 1.0))
        notes = merged
    text = generate_fn(numbered(notes))
    return text, [Source(i, n.path, n.page, n.heading, 1.0) for i, n in enumerate(notes, 1)]
