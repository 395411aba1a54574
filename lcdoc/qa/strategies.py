"""The routes a question can take, each a small strategy over one AskContext: stuff, rag (with
the SELF-ROUTE escalation), hybrid (named files stuffed, the index retrieved) and map-reduce."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from lcdoc.qa.answer import Source, cite, mark_cited
from lcdoc.errors import DoesNotFitError
from lcdoc.qa.evidence import UNANSWERED, best_quote, supported
from lcdoc.qa.protocols import Model, Searchable
from lcdoc.ingest import Document
from lcdoc.qa.route import Route

SYSTEM = (
    "You answer questions about documents. Use only the numbered sources below and cite the "
    "ones you use in square brackets, like [1]. If the sources do not contain the answer, say "
    "\"The sources do not contain the answer.\""
)
STOP = frozenset("a an the of to in on and or is are was were be by for with that this it as at "
                 "from which what who when where how why do does did".split())


@dataclass
class Passage:
    """A span of a document given to the model, with where it came from."""

    path: str
    text: str
    page: int | None
    heading: str
    score: float
    start: int = 0
    page_end: int | None = None


@dataclass
class AskContext:
    """One question: its documents, engine and budgets, and the accounts every route adds to."""

    question: str
    history: list
    eng: Model
    docs: list[Document]  # named files and stdin, read once
    index: Any  # the --index (lcdoc.index.Index), or None
    search_index: Searchable | None  # what retrieval searches: the index, files indexed on the fly, or both
    allowed: set | None  # paths retrieval may return (None: any)
    budget: int  # tokens of documents the context holds
    limit: int | None  # what auto stuffs at most (calibrated, or the default)
    doc_tokens: int | None
    index_tokens: int | None
    index_docs: list[Document] | None  # the index's documents, when already read
    mode: str
    answer_tokens: int
    on_text: Callable[[str], None] | None
    timings: dict = field(default_factory=lambda: {"retrieve_s": 0.0, "prefill_s": 0.0,
                                                   "generate_s": 0.0, "evidence_s": 0.0})
    tokens: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    query: str = ""  # what retrieval searches for: the question with the conversation's last ones
    speed: Any = None  # lcdoc.engine.speed.Speed measured here for this model and plan
    max_seconds: float = float("inf")  # an escalation predicted to pass this is not taken
    started: float = 0.0  # perf_counter() when the question was asked
    not_read: str = ""  # what an escalation left unread for the time budget, and how to allow it
    last_prefill_s: float = 0.0  # the last prompt's prefill, for the speed book:
    last_prefill_tokens: int = 0  # its tokens prefilled,
    last_prefill_start: int = 0  # after this many restored

    def generate(self, context: str, stream: bool = True) -> str:
        """The answer to the question over this context, counted into the accounts."""
        eng = self.eng
        prefix, suffix, stops = eng.chat_parts(SYSTEM, context, self.question, self.history)
        comp = eng.complete(prefix, suffix, max_tokens=self.answer_tokens, stop=stops,
                            on_text=self.on_text if stream else None)
        # prompt and restored describe the prompt that gave the answer (an escalation's second
        # prompt replaces the first, so prompt never exceeds the context); times and answer
        # tokens add up over every call.
        self.tokens["restored"] = comp.n_cached
        self.timings["prefill_s"] += comp.prefill_s
        self.timings["generate_s"] += comp.generate_s
        self.timings["read_s"] = self.timings.get("read_s", 0.0) + comp.tokenize_s
        self.timings["save_s"] = self.timings.get("save_s", 0.0) + comp.save_s
        self.last_prefill_s = comp.prefill_s
        self.last_prefill_tokens, self.last_prefill_start = comp.n_prompt - comp.n_cached, comp.n_cached
        self.tokens["prompt"] = comp.n_prompt
        self.tokens["completion"] += comp.n_completion
        return comp.text.strip()

    @contextmanager
    def clock(self, name: str):
        """Time the block into timings[name]."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def everything(self) -> list[Document]:
        """The named documents, else the whole index."""
        if self.docs:
            return self.docs
        if self.index_docs is None:
            self.index_docs = all_documents(self.index)
        return self.index_docs



def _first_pass_speed(ctx: "AskContext"):
    """The speeds to price an escalation with: this answer's own first prompt gives the prefill
    rate where it was long enough, the book (or the model's shape) how it slows with length."""
    from lcdoc.engine.speed import MIN_PREFILL_TOKENS, Speed

    book = ctx.speed if isinstance(ctx.speed, Speed) else Speed(None, None)
    decode = book.decode_tok_s or (ctx.tokens["completion"] / ctx.timings["generate_s"]
                                   if ctx.timings["generate_s"] > 0 and ctx.tokens["completion"]
                                   else None)
    speed = replace(book, decode_tok_s=decode)
    if ctx.last_prefill_s > 0 and ctx.last_prefill_tokens >= MIN_PREFILL_TOKENS:
        speed = speed.measured(ctx.last_prefill_tokens, ctx.last_prefill_s, ctx.last_prefill_start)
    return speed


@dataclass
class Outcome:
    text: str
    sources: list[Source]
    given: list[str]  # the texts the model was given, for the evidence check
    escalated: bool = False


class Stuff:
    """Everything in the context, whole and in order."""

    def run(self, ctx: AskContext, route: Route) -> Outcome:
        total = ctx.doc_tokens if ctx.docs else ctx.index_tokens
        if total > ctx.budget:
            raise DoesNotFitError(f"--mode stuff: the documents ({total} tokens) do not fit the "
                                  f"{ctx.budget}-token budget of a {ctx.eng.n_ctx}-token context")
        docs = ctx.everything()
        with ThreadPoolExecutor(1, thread_name_prefix="lcdoc-units") as pool:
            units = pool.submit(source_units, docs)  # chunked while the model reads
            text = ctx.generate(stuff_context(docs))
            with ctx.clock("evidence_s"):
                sources = attribute(text, docs, ctx.question, units=units.result())
        return Outcome(text, sources, [d.text for d in docs])


class MapReduce:
    """Notes on each part the model reads at once, then the answer over the notes."""

    def run(self, ctx: AskContext, route: Route) -> Outcome:
        docs = ctx.everything()
        text, sources = map_reduce(ctx.question, docs, ctx.eng, route.budget,
                                   generate_fn=ctx.generate, on_text=ctx.on_text)
        return Outcome(text, sources, [d.text for d in docs])


class Rag:
    """A focused first retrieval; when its answer says the passages lack it or (auto) claims
    what no passage holds, SELF-ROUTE escalates: to the whole documents when they fit what the
    model reads, else to the full retrieval budget."""

    stuffs_named = False

    def run(self, ctx: AskContext, route: Route) -> Outcome:
        stuffed = ctx.docs if self.stuffs_named else []
        room = ctx.budget - (ctx.eng.count(stuff_context(stuffed)) if stuffed else 0)
        # Small models answer best from a few strong passages, and it is cheap; hits alone,
        # without neighbours, in the first pass.
        first = room if self.stuffs_named else min(room, max(1024, room // 4))
        passages, secs = rag_passages(ctx.search_index, ctx.query or ctx.question, first,
                                      ctx.eng.count, ctx.allowed, radius=0, order=best_last_order)
        ctx.timings["retrieve_s"] += secs
        context = (stuff_context(stuffed) + "\n\n" if stuffed else "") + numbered(passages, len(stuffed))
        streamed = first == room and ctx.on_text is not None
        text = ctx.generate(context, stream=streamed)
        given = [d.text for d in stuffed] + [p.text for p in passages]
        refused = bool(UNANSWERED.search(text))
        with ctx.clock("evidence_s"):
            unsupported = ctx.mode == "auto" and not refused and \
                not supported(text, ctx.question, given)
        if (refused or unsupported) and first < room:
            why = ("said the sources lack it" if refused else
                   "claims what no passage sentence holds (quoted evidence)")
            if self._affordable(ctx, room, first, why):
                return self._escalate(ctx, room, first, why)
        if not streamed and ctx.on_text:
            ctx.on_text(text)
        with ctx.clock("evidence_s"):
            sources = self._sources(text, ctx.question, stuffed, passages)
        return Outcome(text, sources, given)

    @staticmethod
    def _affordable(ctx: AskContext, room: int, first: int, why: str) -> bool:
        """Whether the escalation's predicted time fits what is left of the time budget; when it
        does not, the answer says what was not read and how to allow it."""
        total = (ctx.doc_tokens or 0) + (ctx.index_tokens or 0)
        reread = total if total <= min(room, ctx.limit or room) else room
        speed = _first_pass_speed(ctx)
        predicted = speed.predict(reread, ctx.answer_tokens)
        if predicted is None:
            return True  # nothing to price it with: as before
        spent = time.perf_counter() - ctx.started
        if spent + predicted <= ctx.max_seconds:
            return True
        need = int(spent + predicted) + 1
        ctx.not_read = (f"the answer {why}, from {first:,} tokens of passages; reading "
                        f"{reread:,} tokens instead would take about {predicted:.0f} s more (at "
                        f"{reread / speed.prefill_seconds(reread):,.0f} tokens/s over that length),"
                        f" past the {ctx.max_seconds:g} s budget: not "
                        f"read. Allow it with --max-seconds {need} (or max_seconds = {need} in "
                        f"the config)")
        ctx.reasons.append("SELF-ROUTE not taken: " + ctx.not_read)
        return False

    def _escalate(self, ctx: AskContext, room: int, first: int, why: str) -> Outcome:
        total = (ctx.doc_tokens or 0) + (ctx.index_tokens or 0)
        if total <= min(room, ctx.limit or room):  # SELF-ROUTE proper: the whole, read reliably
            whole = list(ctx.docs) + (all_documents(ctx.index) if ctx.index is not None else [])
            ctx.reasons.append(f"SELF-ROUTE: the answer from {first} tokens of passages {why}; "
                               f"the documents fit the {room}-token budget, so they were stuffed "
                               f"whole and asked again")
            text = ctx.generate(stuff_context(whole))
            with ctx.clock("evidence_s"):
                sources = attribute(text, whole, ctx.question)
            return Outcome(text, sources, [d.text for d in whole], True)
        ctx.reasons.append(f"SELF-ROUTE: the answer from {first} tokens of passages {why}; "
                           f"retried with the full {room}-token budget")
        passages, secs = rag_passages(ctx.search_index, ctx.query or ctx.question, room,
                                      ctx.eng.count, ctx.allowed)
        ctx.timings["retrieve_s"] += secs
        text = ctx.generate(numbered(passages))
        with ctx.clock("evidence_s"):
            sources = self._sources(text, ctx.question, [], passages)
        return Outcome(text, sources, [p.text for p in passages], True)

    @staticmethod
    def _sources(text: str, question: str, stuffed: list[Document], passages: list[Passage]
                 ) -> list[Source]:
        sources = [Source(i, d.path, None, "", 1.0, quote=best_quote(text, question, d.text).text)
                   for i, d in enumerate(stuffed, 1)]
        sources += [Source(len(stuffed) + i, p.path, p.page, p.heading, p.score, page_end=p.page_end,
                           quote=best_quote(text, question, p.text).text)
                    for i, p in enumerate(passages, 1)]
        # Listed best first, whatever order the prompt gave them in; n stays the [n] cited.
        return sorted(mark_cited(text, sources), key=lambda s: (not s.cited, -s.score))


class Hybrid(Rag):
    """The named files stuffed whole; the index fills the rest of the budget by retrieval."""

    stuffs_named = True


STRATEGIES = {"stuff": Stuff(), "rag": Rag(), "hybrid": Hybrid(), "map-reduce": MapReduce()}


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


Unit = tuple  # (page or None, heading, text, its words)


def source_units(docs: list[Document]) -> list[list[Unit]]:
    """Each document's pages (or sections) with their words: what attribute() scores. It does
    not need the answer, so Stuff builds it in a thread while the model reads the prompt."""
    from lcdoc.ingest import chunk_document

    out = []
    for d in docs:
        if d.page_starts:
            units = [(p, "", d.page_text(p)) for p in range(1, d.n_pages + 1)]
        else:
            units = [(None, c.heading, c.text) for c in chunk_document(d, 256, 0)]
        out.append([(page, heading, text, _words(text)) for page, heading, text in units])
    return out


def attribute(answer: str, docs: list[Document], question: str, top: int = 3,
              units: list[list[Unit]] | None = None) -> list[Source]:
    """For stuffed documents: the pages (or sections) whose words the answer and question share
    most (units: source_units(docs), when built ahead)."""
    if UNANSWERED.search(answer):  # the answer says the sources lack it: attribute nothing to them
        return [Source(i, d.path, None, "", 0.0, cited=False) for i, d in enumerate(docs, 1)]
    a_words, q_words = _words(answer), _words(question)
    want = a_words | q_words
    if not want:
        return [Source(i, d.path, None, "", 0.0) for i, d in enumerate(docs, 1)]
    scored = []
    for i, (d, doc_units) in enumerate(zip(docs, units or source_units(docs)), 1):
        for page, heading, text, w in doc_units:
            score = (2 * len(a_words & w) + len(q_words & w)) / (len(want) * 2 or 1)
            scored.append((score, i, d.path, page, heading, text))
    scored.sort(key=lambda x: -x[0])
    out, seen = [], set()
    for score, i, path, page, heading, text in scored:
        if i in seen or score <= 0:  # one source per document: [n] is the document's number
            continue
        seen.add(i)
        out.append(Source(i, path, page, heading, score,
                          quote=best_quote(answer, question, text).text))
        if len(out) == top:
            break
    return out or [Source(i, d.path, None, "", 0.0) for i, d in enumerate(docs, 1)]


def lost_in_the_middle_order(items: list) -> list:
    """Best items at both ends, weakest in the middle (Liu et al., 2023): 1, 3, 5, ..., 6, 4, 2."""
    return items[0::2] + items[1::2][::-1]


def best_last_order(items: list) -> list:
    """Weakest first, best last, next to the question: a few passages read by a small model
    follow recency most (the planted-fact test: 12 of 12 answers against 8 of 12 at both ends)."""
    return items[::-1]


def rag_passages(index, question: str, budget: int, count: Callable[[str], int],
                 paths: set[str] | None = None, radius: int = 1,
                 order: Callable[[list], list] = lost_in_the_middle_order
                 ) -> tuple[list[Passage], float]:
    """Hybrid hits expanded to their neighbours, merged, filling the budget; (passages, seconds)."""
    t0 = time.perf_counter()
    hits = index.search(question, k=40)
    if paths is not None:
        hits = [h for h in hits if h.path in paths]
    used: dict[str, list[tuple[int, int]]] = {}
    passages: list[Passage] = []
    spent = 0
    docs: dict[str, Document] = {}
    taken = ""  # the passages' text, spaces folded: one manual in two formats is given once
    for h in hits:
        if any(a <= h.start and h.end <= b for a, b in used.get(h.path, [])):
            continue
        if " ".join(h.text.split()) in taken:
            continue
        group = index.neighbours(h, radius)
        a = min(g.start for g in group)
        b = max(g.end for g in group)
        if h.path not in docs:
            docs[h.path] = index.store.document(h.path)
        doc = docs[h.path]
        text = doc.text[a:b] if doc else "\n".join(g.text for g in group)
        head = count(f"[99] ({cite(h.path, 999, 1000, h.heading)})\n") + 2
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
        passages.append(Passage(h.path, text.strip(), page, h.heading, h.score, a, page_end))
        taken += "\n" + " ".join(text.split())
        spent += n
        if spent >= budget * 0.97:
            break
    return order(passages), time.perf_counter() - t0


def numbered(passages: list[Passage], offset: int = 0) -> str:
    """Passages as [n] (citation) blocks; n continues after `offset` stuffed documents."""
    return "\n\n".join(f"[{i}] ({cite(p.path, p.page, p.page_end, p.heading)})\n{p.text}"
                       for i, p in enumerate(passages, offset + 1))


def all_documents(index) -> list[Document]:
    """Every document of an index, whole, for stuffing or a map-reduce."""
    return [index.store.document(d.path) for d in index.store.documents()]


class MergedIndex:
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
        return MergedStore(self)


class MergedStore:
    def __init__(self, merged: MergedIndex) -> None:
        self.merged = merged

    def document(self, path: str):
        return self.merged._owner(path).store.document(path)


def map_reduce(question: str, docs: list[Document], eng, budget: int,
               generate_fn: Callable[..., str], on_text: Callable[[str], None] | None = None
               ) -> tuple[str, list[Source]]:
    """Notes on each context-sized part, then the answer over the notes (combined level by level
    while they do not fit); the notes are the sources."""
    from lcdoc.qa.mapreduce import Note, parts_of, reduce_notes

    def run_all(items: list[tuple[str, str, int]]) -> list[str]:
        out = []
        for system, context, max_tokens in items:
            prefix, suffix, stops = eng.chat_parts(system, context, question)
            out.append(eng.complete(prefix, suffix, max_tokens=max_tokens, stop=stops,
                                    cache_prefix=False).text.strip())
        return out

    notes: list[Note] = []
    for d in docs:
        parts = parts_of(d, max(256, int(budget * 0.8)), eng.count)
        texts = run_all([(NOTES, c.text, 160) for c in parts])
        notes += [Note(t, cite(d.path, c.page_start, None, ""),
                       Passage(d.path, t, c.page_start, c.heading, 1.0))
                  for c, t in zip(parts, texts)]
    def passages(group: list[Note]) -> list[Passage]:  # each note where its first part lies
        return [Passage(n.origin.path, n.text, n.origin.page, n.origin.heading, 1.0) for n in group]

    notes, _ = reduce_notes(notes, budget, eng.count, lambda groups: run_all(
        [(COMBINE_NOTES, numbered(passages(g)), 200) for g in groups]))
    text = generate_fn(numbered(passages(notes)))
    return text, [Source(i, p.path, p.page, p.heading, 1.0)
                  for i, p in enumerate(passages(notes), 1)]


NOTES = ("Write short notes on what this part of a document says that helps answer the question. "
         "Keep names, numbers and page markers.")
COMBINE_NOTES = "Combine these notes into shorter notes."
