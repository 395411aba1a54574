"""Cut a document along its headings, then paragraphs, then sentences, into chunks of a token budget.

Every chunk keeps exact character offsets into the document, its page range and its heading path,
so an answer can cite "manual.pdf p. 12, §2.1 Installation".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from lcdoc.ingest.document import Document

# Lines that open a section: Markdown ATX, numbered headings as PDFs and manuals print them.
ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
# Bumped when chunk boundaries or headings change: indexes built before are re-chunked.
CHUNKER_VERSION = 4  # 4: a numbered line whose sentence runs on is a list item
# A table-of-contents line: dot leaders, or a title followed by its page number.
TOC_LINE = re.compile(r"(\s*\.){3,}\s*\d*$|\s\d{1,4}$")
NUMBERED = re.compile(r"^((?:\d+\.)*\d+)\.?[ \t]+([A-Z][^\n]{1,80})$", re.M)
UNDERLINE = re.compile(r"^([^\n]{2,100})\n([=\-~^*#+`:'\"])\2{2,}[ \t]*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[\"'(\[A-Z0-9])|\n")
BLANK = re.compile(r"\n[ \t]*\n+")


@dataclass(frozen=True)
class Chunk:
    """A passage of a document with what is needed to cite it."""

    path: str
    ordinal: int
    text: str
    start: int
    end: int
    heading: str  # "Installation > From source", empty when the document has no headings
    page_start: int | None
    page_end: int | None
    n_tokens: int

    @property
    def pages(self) -> str:
        if self.page_start is None:
            return ""
        if self.page_start == self.page_end:
            return f"p. {self.page_start}"
        return f"pp. {self.page_start}-{self.page_end}"

    def indexed_text(self) -> str:
        """What is embedded and BM25-indexed: the heading path gives a passage its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@lru_cache(maxsize=4)
def embedding_token_counter(model_dir: str | None = None) -> Callable[[Sequence[str]], list[int]]:
    """Token counts in the embedding model's own word pieces (fast tokenizer, no torch)."""
    from pathlib import Path

    try:
        from tokenizers import Tokenizer

        from lcdoc.models import find_embedding_model

        folder = Path(model_dir) if model_dir else find_embedding_model()
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()

        def count(texts: Sequence[str]) -> list[int]:
            return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]

        return count
    except Exception:  # no tokenizer file: about 4 characters a token for English
        return lambda texts: [max(1, len(t) // 4) for t in texts]


def find_headings(text: str, kind: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) for each heading line the document's kind makes recognisable."""
    fenced = [(m.start(), m.end()) for m in FENCE.finditer(text)] if kind == "markdown" else []

    def in_fence(pos: int) -> bool:
        return any(a <= pos < b for a, b in fenced)

    found: dict[int, tuple[int, int, str]] = {}
    # '#' lines are headings only where the format says so: in a PDF or a text file they are
    # as often shell comments.
    for m in ATX.finditer(text) if kind in ("markdown", "html") else ():
        if not in_fence(m.start()):
            found[m.start()] = (m.start(), len(m.group(1)), m.group(2).strip())
    if kind in ("rst", "text", "markdown"):
        order: list[str] = []
        for m in UNDERLINE.finditer(text):
            title, ch = m.group(1).strip(), m.group(2)
            if not title or in_fence(m.start()) or len(title) > len(m.group(0)) - len(m.group(1)) + 2:
                continue
            if re.fullmatch(r"[=\-~^*#+`:'\". ]+", title):
                continue
            if ch not in order:
                order.append(ch)
            found[m.start()] = (m.start(), order.index(ch) + 1, title)
    if kind in ("pdf", "text"):
        for m in NUMBERED.finditer(text):
            title = m.group(2).strip()
            words = title.split()
            # A numbered list item reads as a sentence; a heading is short and unpunctuated,
            # and the line after it does not carry its sentence on ("2 Redistributions in
            # binary form must reproduce the above copyright\nnotice, this list ...").
            if len(words) > 10 or title[-1] in ".,;:)" or m.start() in found:
                continue
            if re.match(r"[ \t]*[a-z(,;]", text[m.end() + 1 : m.end() + 40]):
                continue
            if TOC_LINE.search(title):  # "3.1 Incremental CRC . . . . 4": a contents entry
                continue
            level = m.group(1).count(".") + 1
            found[m.start()] = (m.start(), level, f"{m.group(1)} {title}")
    return [found[k] for k in sorted(found)]


def _units(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Paragraph spans within [start, end), trimmed of surrounding whitespace."""
    spans, pos = [], start
    for m in BLANK.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def _split_long(text: str, a: int, b: int, n_tok: int, budget: int) -> list[tuple[int, int]]:
    """Cut one over-long span at sentence ends, else at whitespace, into about budget-sized parts."""
    pieces, pos = [], a
    for m in SENTENCE_END.finditer(text, a, b):
        pieces.append((pos, m.start()))
        pos = m.end()
    pieces.append((pos, b))
    pieces = [(x, y) for x, y in pieces if y > x]
    if len(pieces) > 1:
        return pieces
    parts = math.ceil(n_tok / budget)
    step = (b - a) / parts
    cuts = [a]
    for i in range(1, parts):
        c = int(a + i * step)
        ws = text.rfind(" ", cuts[-1] + 1, c + 1)
        cuts.append(ws if ws > cuts[-1] else c)
    cuts.append(b)
    return [(x, y) for x, y in zip(cuts, cuts[1:]) if y > x]


# A span longer than this many characters is never handed to the tokenizer whole: a 24 MB
# one-line file cost 2.8 GB of token offsets (138 MB now). It is cut first, without counting;
# the pieces are counted exactly in the next round.
LONG_SPAN_CHARS = 64 * 1024
# Characters tokenised per call, so a section of many paragraphs is counted in bounded memory.
COUNT_BATCH_CHARS = 1 << 20


def _count_bounded(count: Callable[[Sequence[str]], list[int]], text: str,
                   spans: list[tuple[int, int]], budget: int) -> list[int]:
    """Token counts of spans, tokenised in batches of bounded size; an over-long span gets an
    estimate over budget instead (it is split, never tokenised whole)."""
    out: list[int] = [0] * len(spans)
    batch: list[int] = []
    chars = 0

    def run() -> None:
        for i, n in zip(batch, count([text[spans[i][0]:spans[i][1]] for i in batch])):
            out[i] = n
        batch.clear()

    for i, (x, y) in enumerate(spans):
        if y - x > LONG_SPAN_CHARS:
            # Counted as a token a character, so it is cut into pieces of about `budget`
            # characters (a third to a half of the budget in tokens), which the packing below
            # joins back into full chunks.
            out[i] = max(budget + 1, y - x)
            continue
        batch.append(i)
        chars += y - x
        if chars >= COUNT_BATCH_CHARS:
            run()
            chars = 0
    if batch:
        run()
    return out


Unit = tuple[int, int, int, int]  # start, end, tokens, section index


def sections_of(text: str, headings: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """(start, end, heading path "A > B") of each section the headings open, in order."""
    sections: list[tuple[int, int, str]] = []
    stack: list[tuple[int, str]] = []
    bounds = [h[0] for h in headings] + [len(text)]
    if not headings or headings[0][0] > 0:
        sections.append((0, bounds[0], ""))
    for (pos, level, title), nxt in zip(headings, bounds[1:]):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        sections.append((pos, nxt, " > ".join(t for _, t in stack)))
    return sections


def units_of(text: str, sections: list[tuple[int, int, str]], count, budget: int) -> list[Unit]:
    """Paragraphs, split further while over budget, each tagged with its section, in order."""
    units: list[Unit] = []
    for si, (a, b, _) in enumerate(sections):
        todo = _units(text, a, b)
        while todo:
            toks = _count_bounded(count, text, todo, budget)
            nxt = []
            for (x, y), t in zip(todo, toks):
                if t <= budget:
                    units.append((x, y, t, si))
                else:
                    split = _split_long(text, x, y, t, budget)
                    nxt.extend(split if len(split) > 1 else [(x, y)])
                    if len(split) == 1:  # unsplittable; accept it as is
                        units.append((x, y, t, si))
                        nxt.pop()
            todo = nxt
    return sorted(units)


def _chunk(doc: Document, sections: list[tuple[int, int, str]], cur: list[Unit],
           ordinal: int) -> Chunk:
    """One chunk of consecutive units, named for the section most of its tokens are in."""
    a, b = cur[0][0], cur[-1][1]
    by_section: dict[int, int] = {}
    for u in cur:
        by_section[u[3]] = by_section.get(u[3], 0) + u[2]
    heading = sections[max(by_section, key=lambda s: (by_section[s], -s))][2]
    return Chunk(path=doc.path, ordinal=ordinal, text=doc.text[a:b], start=a, end=b,
                 heading=heading, page_start=doc.page_at(a), page_end=doc.page_at(max(a, b - 1)),
                 n_tokens=sum(u[2] for u in cur))


def chunk_document(
    doc: Document,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
    count_tokens: Callable[[Sequence[str]], list[int]] | None = None,
) -> list[Chunk]:
    """Chunks of at most about `max_tokens` embedding tokens, never crossing a major heading needlessly."""
    count = count_tokens or embedding_token_counter()
    budget = max(16, max_tokens - 24)  # room for [CLS], [SEP] and the heading prefix
    # The file's own outline when it has one (PDF bookmarks); line heuristics only otherwise.
    headings = list(doc.outline) if doc.outline else find_headings(doc.text, doc.kind)
    sections = sections_of(doc.text, headings)
    chunks: list[Chunk] = []
    cur: list[Unit] = []
    for u in units_of(doc.text, sections, count, budget):
        size = sum(x[2] for x in cur)
        new_section = bool(cur) and u[3] != cur[-1][3]
        # A new section starts a new chunk unless the current one is still a stub (a lone heading).
        if cur and (size + u[2] > budget or (new_section and size >= budget // 4)):
            chunks.append(_chunk(doc, sections, cur, len(chunks)))
            carry: list[Unit] = []
            if not new_section and overlap_tokens > 0:
                for x in reversed(cur):
                    if sum(c[2] for c in carry) + x[2] > overlap_tokens or len(carry) + 1 >= len(cur):
                        break
                    carry.insert(0, x)
            cur = carry
        cur.append(u)
    if cur:
        chunks.append(_chunk(doc, sections, cur, len(chunks)))
    return chunks
