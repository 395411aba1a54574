"""One document's summary: stuffed when it fits the context, map-reduce by levels when not."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Callable

from lcdoc.ingest import Document
from lcdoc.qa.mapreduce import Note, joined, parts_of, reduce_notes

STYLES = {
    "brief": "Summarise the document in one short paragraph of at most {w} words.",
    "detailed": "Write a detailed summary of the document, section by section, in at most {w} words.",
    "bullets": "Summarise the document as 3 to 7 bullet points, at most {w} words in all.",
}
PART = "Summarise this part of a longer document in at most {w} words. Keep names, numbers and " \
       "page references."
COMBINE = "These are summaries of consecutive parts of one document, with their pages. " \
          "Combine them into one summary of at most {w} words. Keep page references like (p. 3)."


@dataclass(frozen=True)
class Summary:
    """One document's summary and what it took (one JSON line of `--json`)."""

    path: str
    summary: str
    route: str  # stuff or map-reduce
    chunks: int  # leaf parts summarised (1 when stuffed)
    tokens: int  # the document's length in the model's tokens
    seconds: float
    levels: int = 1
    sha256: str = ""

    def as_json(self) -> dict:
        d = asdict(self)
        d.pop("sha256")
        d["seconds"] = round(self.seconds, 2)
        return d


def answer_tokens(max_words: int) -> int:
    """Room for a summary of max_words (about 1.6 tokens a word, and a margin)."""
    return int(max_words * 1.6) + 32


def document_budget(engine, instruction: str, max_words: int) -> int:
    """Tokens one sequence of the engine's context has for a document under this instruction."""
    pre0, suf0, _ = engine.chat_parts(instruction, "", instruction)
    return engine.n_ctx - engine.count(pre0 + suf0) - answer_tokens(max_words) - 64


def labelled(doc: Document, start: int, end: int) -> str:
    """Text of [start, end) with page markers, so summaries can cite pages."""
    if not doc.page_starts:
        return doc.text[start:end]
    first, last = doc.page_at(start), doc.page_at(max(start, end - 1))
    parts = []
    for p in range(first, last + 1):
        a = max(start, doc.page_starts[p - 1])
        b = min(end, doc.page_starts[p] if p < doc.n_pages else len(doc.text))
        parts.append(f"[page {p}]\n{doc.text[a:b].strip()}")
    return "\n\n".join(parts)


def request(engine, system: str, context: str, question: str, max_tokens: int):
    """One generation request (lcdoc.engine.parallel.Request) for the side-by-side decoder."""
    from lcdoc.engine.parallel import Request

    pre, suf, stops = engine.chat_parts(system, context, question)
    a, b = engine.prompt_tokens(pre, suf)
    return Request(a + b, max_tokens, tuple(stops))


def summarize_document(
    doc: Document,
    engine,
    style: str = "brief",
    max_words: int = 150,
    prompt: str | None = None,
    on_level: Callable[[str], None] | None = None,
    decoder=None,
) -> Summary:
    """Summary of one document: stuffed if it fits the plan's context, else map-reduce by level
    (lcdoc.qa.mapreduce). With a ParallelDecoder, the parts of a level are decoded side by side."""
    from lcdoc.engine.parallel import run_many

    t0 = time.perf_counter()
    instruction = prompt or STYLES[style].format(w=max_words)
    budget = document_budget(engine, instruction, max_words)
    whole = labelled(doc, 0, len(doc.text))
    n_tok = engine.count(whole)

    def run_all(items: list[tuple]) -> list[str]:
        """(system, context, max_tokens[, question]) each; the system text is the question
        where none is given."""
        return run_many(engine, decoder, [request(engine, it[0], it[1], it[-1] if len(it) > 3
                                                  else it[0], it[2]) for it in items])

    if n_tok <= budget:
        text = run_all([(instruction, whole, answer_tokens(max_words), instruction)])[0]
        return Summary(doc.path, text, "stuff", 1, n_tok, time.perf_counter() - t0, 1, doc.sha256)
    part_words = max(40, max_words // 2)
    parts = parts_of(doc, max(256, budget // 2), engine.count)  # room for prompt and answer
    texts = run_all([(PART.format(w=part_words), labelled(doc, c.start, c.end),
                      answer_tokens(part_words)) for c in parts])
    if on_level:
        on_level(f"{doc.path}: level 1, {len(parts)} parts summarised")
    notes, levels = reduce_notes(
        [Note(t, c.pages or f"part {c.ordinal + 1}") for c, t in zip(parts, texts)], budget,
        engine.count, lambda groups: run_all([(COMBINE.format(w=part_words), joined(g),
                                               answer_tokens(part_words)) for g in groups]),
        on_level=(lambda lv, n: on_level(f"{doc.path}: level {lv + 1}, {n} summaries"))
        if on_level else None)
    final = run_all([(instruction + " Cite pages like (p. 3) where the parts give them.",
                      joined(notes), answer_tokens(max_words), instruction)])[0]
    return Summary(doc.path, final, "map-reduce", len(parts), n_tok, time.perf_counter() - t0,
                   levels + 2, doc.sha256)


def whole_sentences(text: str) -> str:
    """The text without a last sentence cut off by the token limit: it ends at the last full
    sentence (or the last whole line of a list); only a text with neither is kept, marked "…"."""
    text = text.rstrip()
    if not text or re.search(r"[.!?…:;)\]\"'»”’]$", text):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?…][\"'»”’)\]]*(?=\s)", text)]
    line = text.rfind("\n")
    cut = max(ends[-1] if ends else -1, line)
    return text[:cut].rstrip() if cut > 0 else text + "…"


def digest(summaries: list[Summary], engine, max_words: int = 250) -> str:
    """One summary of the summaries, citing documents as [n]."""
    numbered = "\n\n".join(f"[{i}] {s.path}\n{s.summary}" for i, s in enumerate(summaries, 1))
    instruction = (f"These are summaries of the documents in a folder. Write one overview of at "
                   f"most {max_words} words, citing documents as [n].")
    pre, suf, stops = engine.chat_parts(instruction, numbered, instruction)
    budget = engine.n_ctx - int(max_words * 1.6) - 64
    if engine.count(pre + suf) > budget and len(summaries) == 1:  # one alone too long: cut it
        s = summaries[0]
        keep = int(len(s.summary) * budget / (engine.count(pre + suf) + 1) * 0.9)
        return digest([Summary(s.path, s.summary[:keep], s.route, 0, 0, 0.0)], engine, max_words) \
            if keep > 0 else ""
    if engine.count(pre + suf) > budget:  # too many: digest in groups, then the digests
        half = len(summaries) // 2
        parts = [digest(summaries[:half], engine, max_words), digest(summaries[half:], engine, max_words)]
        return digest([Summary(f"part {i + 1}", p, "digest", 0, 0, 0.0) for i, p in enumerate(parts)],
                      engine, max_words)
    return engine.complete(pre, suf, max_tokens=int(max_words * 1.6) + 32, stop=stops,
                           cache_prefix=False).text.strip()
