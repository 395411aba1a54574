"""Map-reduce over text longer than the context: notes on each part, combined level by level.

One implementation for the two users: `lcdoc summarize` of a document that does not fit, and the
map-reduce route of `lcdoc ask` (a question that needs a whole document too long to stuff). Each
brings its own prompts through `run_all`, which may decode the parts side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lcdoc.ingest import Chunk, Document, chunk_document

# (system prompt, context, max tokens) -> generated text, one per item, in order.
RunAll = Callable[[list[tuple[str, str, int]]], list[str]]
Count = Callable[[str], int]
# A note's share of the budget beyond its own tokens: its label and the blank line between notes.
NOTE_OVERHEAD = 16


@dataclass(frozen=True)
class Note:
    """What the model wrote about one part (or a group of parts) and where the part lies."""

    text: str
    label: str  # its pages ("pp. 3-5"), or its part number
    origin: Any = None  # what the caller keeps of the first part it covers (a Passage, a Chunk)


def parts_of(doc: Document, part_budget: int, count: Count) -> list[Chunk]:
    """The document cut into section-aware parts of about part_budget tokens, no overlap."""
    return chunk_document(doc, part_budget, 0, count_tokens=lambda ts: [count(t) for t in ts])


def joined(notes: Sequence[Note]) -> str:
    """Notes as one context, each with its label, in document order."""
    return "\n\n".join(f"({n.label}) {n.text}" for n in notes)


def neighbour_groups(notes: Sequence[Note], budget: int, count: Count) -> list[list[Note]]:
    """Consecutive notes grouped so that each group fits the budget; pairs when no group of
    more than one would fit (every level must shrink the list)."""
    groups: list[list[Note]] = []
    cur: list[Note] = []
    size = 0
    for n in notes:
        tokens = count(n.text) + NOTE_OVERHEAD
        if cur and size + tokens > budget:
            groups.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += tokens
    groups.append(cur)
    if len(groups) == len(notes):
        groups = [list(notes[i : i + 2]) for i in range(0, len(notes), 2)]
    return groups


def span_label(group: Sequence[Note]) -> str:
    """The label of a group: its first part's start to its last part's end ("3-9")."""
    if len(group) == 1:
        return group[0].label
    return f"{group[0].label.split('-')[0]}-{group[-1].label.split('-')[-1]}"


def reduce_notes(notes: list[Note], budget: int, count: Count,
                 combine: Callable[[list[list[Note]]], list[str]],
                 on_level: Callable[[int, int], None] | None = None) -> tuple[list[Note], int]:
    """Combine neighbouring notes, level by level, until together they fit the budget; the
    notes left and how many levels it took."""
    levels = 0
    while len(notes) > 1 and count(joined(notes)) > budget:
        groups = neighbour_groups(notes, budget, count)
        texts = combine(groups)
        notes = [Note(t, span_label(g), g[0].origin) for g, t in zip(groups, texts)]
        levels += 1
        if on_level:
            on_level(levels, len(notes))
    return notes, levels
