"""A bundled default haystack: varied, seeded English prose with no facts a needle could collide with."""

from __future__ import annotations

import random

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
