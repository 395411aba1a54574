"""Quoted evidence: the sentences of each source that carry the answer, and whether any does.

A small model answers confidently from nothing (the README's own showcase question got a wrong
answer). The answer's key terms (numbers, names, content words the question did not bring) are
looked for sentence by sentence in the text each source gave the model: the best sentences are
quoted under the answer, and an answer whose key terms no source sentence holds is flagged as
unsupported, which in auto mode triggers the SELF-ROUTE escalation like a refusal does. This is
lexical evidence, not entailment: it catches an answer invented from nothing, not one that
misreads a sentence it quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STOP = frozenset(
    "a an the of to in on and or is are was were be been being by for with that this these those "
    "it its as at from which what who whom whose when where how why do does did not no yes can "
    "could would should will shall may might must has have had i you he she we they them their "
    "there here than then so such also only any all each other into about over under per via "
    "according document documents source sources text passage says said".split())
# An answer that says the sources lack it (the model was told to say so).
UNANSWERED = re.compile(
    r"(do(es)? not contain|doesn't contain|no (information|mention)|not (mentioned|provided|stated|"
    r"found|specified)|cannot (answer|find|determine)|can't (answer|find)|unable to (answer|find)|"
    r"i don't know|not enough information)", re.I)
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n{2,}")
MAX_QUOTE = 300  # characters of one quote
SUPPORT = 0.6  # share of the answer's key terms one sentence window must hold


def terms(text: str) -> set[str]:
    """Content words and numbers, lower-cased (code-like tokens such as read.table kept whole)."""
    return {w for w in re.findall(r"[A-Za-z0-9][\w.\-]*[A-Za-z0-9]|\d", text.lower())
            if w not in STOP and (len(w) > 2 or w.isdigit())}


def key_terms(answer: str, question: str) -> set[str]:
    """What the answer claims beyond the question's own words, citations left out."""
    answer = re.sub(r"\[\d+\]", " ", answer)
    return terms(answer) - terms(question)


def first_sentence(text: str, limit: int = 240) -> str:
    """The first whole sentence on one line, cut at a word (with "…") past `limit` characters."""
    text = " ".join(text.split())
    m = re.search(r"(?<=[.!?])\s", text)
    first = text[: m.start()] if m else text
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + "…"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.split(text) if s and s.strip()]


@dataclass(frozen=True)
class Quote:
    text: str  # the sentence(s), shortened to MAX_QUOTE characters around the key terms
    coverage: float  # share of the answer's key terms they hold


def best_quote(answer: str, question: str, text: str) -> Quote:
    """The sentence (with its neighbour, when that holds more) that shares most key terms."""
    want = key_terms(answer, question)
    sents = sentences(text)
    if not sents:
        return Quote("", 0.0)
    if not want:  # nothing to look for beyond the question: quote where the question's words are
        want = terms(question)
    best, best_cov = "", -1.0
    for i, s in enumerate(sents):
        for window in (s, " ".join(sents[i : i + 2])):
            cov = len(want & terms(window)) / len(want) if want else 0.0
            if cov > best_cov + 1e-9 or (abs(cov - best_cov) < 1e-9 and len(window) < len(best)):
                best, best_cov = window, cov
    return Quote(_shorten(best, want), max(0.0, best_cov))


def _shorten(text: str, want: set[str]) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_QUOTE:
        return text
    low = text.lower()
    hits = [low.find(w) for w in want if low.find(w) >= 0]
    start = max(0, min(hits) - 60) if hits else 0
    cut = text[start : start + MAX_QUOTE]
    return ("…" if start else "") + cut.strip() + "…"


def _windows(texts: list[str]) -> list[set[str]]:
    out = []
    for text in texts:
        sents = sentences(text)
        out += [terms(" ".join(sents[i : i + 2])) for i in range(len(sents))]
    return out


def exact_terms(claim: str, question: str) -> set[str]:
    """The claim's numbers and names (capitalised words past a sentence's first), which a
    supporting sentence must hold exactly: "31-41-58" is not supported by "31-41-59"."""
    words = re.findall(r"[A-Za-z0-9][\w.\-]*[A-Za-z0-9]|\d", claim)
    numbers = {w.lower() for w in words if any(ch.isdigit() for ch in w)}
    names = {w.lower() for i, w in enumerate(words)
             if i > 0 and w[0].isupper() and w.lower() not in STOP and len(w) > 2}
    return ((numbers | names) & terms(claim)) - terms(question)


def supported(answer: str, question: str, texts: list[str], exact: bool = True) -> bool:
    """At least half of the answer's sentences that claim something beyond the question find
    most of their key terms in one sentence (or two adjacent) of the texts given to the model,
    and (exact) every number and name they state. An answer that claims nothing beyond the
    question (a yes, a refusal) is not judged here."""
    plain = re.sub(r"\[\d+\]", " ", answer)
    claims = [(key_terms(c, question), exact_terms(c, question) if exact else set())
              for c in sentences(plain)]
    claims = [(c, x) for c, x in claims if c]
    if not claims:
        return True
    windows = _windows(texts)
    held = sum(1 for c, x in claims
               if any(len(c & w) >= SUPPORT * len(c) and x <= w for w in windows))
    return 2 * held >= len(claims)
