"""Needles and haystacks: facts planted at a depth of filler prose cut to a length in tokens.

Used by `lcdoc calibrate` (lcdoc.qa.calibrate) and the NIAH evaluation (lcdoc.eval.niah) alike.
The bundled haystack is varied, seeded English prose with no facts a needle could collide with.
"""

from __future__ import annotations

import random
from typing import Callable

SUBJECTS = ["The committee", "The harbour master", "A visiting engineer", "The school board",
            "The orchard cooperative", "The county surveyor", "The night watchman", "Our librarian",
            "The ferry company", "A local historian", "The weather station", "The choir"]
VERBS = ["reviewed", "postponed", "described", "questioned", "approved", "measured", "repaired",
         "documented", "inspected", "celebrated", "rebuilt", "mapped"]
OBJECTS = ["the northern bridge", "the spring accounts", "the old railway line", "the pumping station",
           "the reading programme", "the cider press", "the river survey", "the lighthouse lamp",
           "the market square", "the winter timetable", "the flood defences", "the town archive"]
TAILS = ["after a long discussion", "before the autumn rains", "with help from volunteers",
         "despite the late frost", "in the presence of the mayor", "for the third year running",
         "while the tide was out", "to everyone's surprise", "at a modest cost",
         "following the new regulations", "over two quiet weekends", "as the minutes record"]


def default_haystack(n_chars: int = 400_000, seed: int = 7) -> str:
    """Deterministic filler prose in paragraphs, long enough to cut any test length from."""
    rng = random.Random(seed)
    paras, size = [], 0
    while size < n_chars:
        sents = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
                 f"{rng.choice(TAILS)}." for _ in range(rng.randint(3, 7))]
        p = " ".join(sents)
        paras.append(p)
        size += len(p) + 2
    return "\n\n".join(paras)


def plant(haystack_paras: list[str], needles: list, depth: int) -> str:
    """Needles (anything with a .fact) inserted at a paragraph boundary `depth` percent of the way in (spread when several)."""
    paras = list(haystack_paras)
    for i, nd in enumerate(needles):
        d = depth if len(needles) == 1 else min(100, depth + i * (100 - depth) // max(1, len(needles)))
        k = round(len(paras) * d / 100)
        paras.insert(k, nd.fact)
    return "\n\n".join(paras)


def cut_to_tokens(text: str, n_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Whole paragraphs from the start of text totalling about n_tokens of the model's tokens."""
    paras, total = [], 0
    for p in text.split("\n\n"):
        t = count(p) + 1
        if total + t > n_tokens:
            break
        paras.append(p)
        total += t
    return paras


def parse_list(spec: str) -> list[int]:
    """'1k,2k,4k' -> [1024, 2048, 4096]; '0,50,100' -> [0, 50, 100]."""
    out = []
    for part in spec.split(","):
        part = part.strip().lower()
        if part.endswith("k"):
            out.append(int(float(part[:-1]) * 1024))
        elif part:
            out.append(int(part))
    return out
