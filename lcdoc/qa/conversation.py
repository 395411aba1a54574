"""A conversation over documents: which earlier turns the next prompt carries, and what a
follow-up searches for.

The documents are never evicted for the conversation. The turns get the room the documents and
the answer leave; when they outgrow it, the oldest are folded into one short summary turn (their
questions and the first sentence of each answer), in blocks, so the folded part stays the same
for several turns and each next turn still extends the context instead of prefilling it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from lcdoc.qa.evidence import first_sentence

Turn = tuple[str, str]  # (question, answer)

# Turns are folded in blocks of about half the room (at least this many turns): the folded part
# then stays the same for many turns, each of which extends the live context, and the prompt is
# re-prefilled from the summary on only once a block.
MIN_FOLD_BLOCK = 4
# The summary of folded turns may take this share of the room (its oldest lines go first).
SUMMARY_SHARE = 0.2
# Without stuffed documents (an index), the conversation may take this share of the context.
INDEX_SHARE = 0.25
SUMMARY_QUESTION = "What did we discuss earlier in this conversation?"


@dataclass(frozen=True)
class Fitted:
    """The turns the prompt carries, and why (for --explain)."""

    turns: list[Turn]
    folded: int  # earliest turns folded into the summary turn
    reason: str


def summary_turn(turns: Sequence[Turn]) -> Turn:
    """One turn standing for many: each question and the first sentence of its answer."""
    lines = [f"- Asked: {first_sentence(q, 160)} Answered: {first_sentence(a, 160)}"
             for q, a in turns]
    return SUMMARY_QUESTION, "Earlier, in this conversation:\n" + "\n".join(lines)


def fit_history(history: Sequence[Turn], room: int, count: Callable[[str], int],
                overhead: int = 16) -> Fitted:
    """The turns that fit `room` tokens: all when they fit, else the newest whole with the
    oldest folded into one summary turn (the limit is what fits, not a number of turns).

    Folds come in blocks sized from the first turns (which never change), so the fold point is
    the same from one turn to the next until the kept turns outgrow the room again.
    """
    history = list(history)
    if not history:
        return Fitted([], 0, "")
    sizes = [count(q) + count(a) + overhead for q, a in history]
    if sum(sizes) <= room:
        return Fitted(history, 0, f"conversation: all {len(history)} earlier turn(s) carried "
                                  f"({sum(sizes)} of {room} tokens for it)")
    steady = max(128, room // 128 * 128)  # the room moves with each question's length: the
    summary_room = int(steady * SUMMARY_SHARE)  # block and summary must not move with it
    first = sizes[:MIN_FOLD_BLOCK]
    block = max(MIN_FOLD_BLOCK, int(steady / 2 / (sum(first) / len(first))))
    folded = 0
    while folded < len(history) and sum(sizes[folded:]) > room - summary_room:
        folded = min(len(history), folded + block)
    summary = _bounded_summary(history[:folded], summary_room, count, overhead)
    kept = history[folded:]
    return Fitted([summary] + kept, folded,
                  f"conversation: {folded} earliest turn(s) folded into a summary, {len(kept)} "
                  f"kept whole; the documents stay (the context leaves {room} tokens for the "
                  f"conversation)")


def _bounded_summary(turns: Sequence[Turn], room: int, count: Callable[[str], int],
                     overhead: int) -> Turn:
    """summary_turn() cut to `room` tokens: the oldest lines go first."""
    lines = summary_turn(turns)[1].split("\n")
    head, body = lines[0], lines[1:]
    while body and count("\n".join([head] + body)) + count(SUMMARY_QUESTION) + overhead > room:
        body = body[1:]
    return SUMMARY_QUESTION, "\n".join([head] + body)


def retrieval_query(question: str, history: Sequence[Turn], turns: int = 2) -> str:
    """What a follow-up searches for: the last questions of the conversation with the new one,
    so "and what does the lowercase one do?" after a question about sed's G still finds the
    hold space. A question that stands alone (no history) is searched as it is."""
    earlier = [q for q, _ in list(history)[-turns:] if q != SUMMARY_QUESTION]
    return " ".join(earlier + [question]) if earlier else question
