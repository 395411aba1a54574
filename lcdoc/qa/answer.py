"""What `lcdoc ask` answers with: the answer, its numbered sources, and the one citation format."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field


def cite(path: str, page: int | None, page_end: int | None, heading: str) -> str:
    """The one citation format, for the model's numbered context and for the reader alike:
    path, page (or pages), section."""
    if page and page_end and page_end != page:
        where = f"{path} pp. {page}-{page_end}"
    else:
        where = path + (f" p. {page}" if page else "")
    return where + (f" § {heading}" if heading else "")


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
        return cite(shown_path, self.page, self.page_end, self.heading)


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
    documents: tuple[tuple[str, str], ...] = field(default=())  # (path, sha256) of those read
    question: str = ""
    conversation: str | None = None  # the conversation's id, when recorded or continued
    turn: int | None = None  # 1, 2, ... within the conversation
    not_read: str = ""  # what an escalation left unread for the time budget, and how to allow it
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
            "documents": [list(d) for d in self.documents], "question": self.question,
            "conversation": self.conversation, "turn": self.turn, "not_read": self.not_read,
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
                   bool(d.get("server")), bool(d.get("supported", True)),
                   tuple(tuple(x) for x in d.get("documents", ())), d.get("question", ""),
                   d.get("conversation"), d.get("turn"), d.get("not_read", ""))



def mark_cited(answer: str, sources: list[Source]) -> list[Source]:
    """Sources in their numbered order (the [n] the model saw), each marked cited or not. An
    answer that cites no number at all leaves them all unmarked (cited)."""
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
    if not cited:
        return sources
    return [dataclasses.replace(s, cited=s.n in cited) for s in sources]


def drop_unknown_citations(answer: str, sources: list[Source]) -> tuple[str, list[int]]:
    """The answer without [n] markers that name no source (a small model invents some)."""
    known = {s.n for s in sources}
    dropped = sorted({int(n) for n in re.findall(r"\[(\d+)\]", answer)} - known)
    if not dropped:
        return answer, []
    text = re.sub(r"\s?\[(\d+)\]", lambda m: "" if int(m.group(1)) in dropped else m.group(0), answer)
    return text, dropped
