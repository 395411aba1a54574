"""`lcdoc calibrate`: how far into its context this model, at this plan, really finds a fact.

A model's recall falls well before its window (RULER); for the packaged SmolLM2 stuffing lost to
retrieval past ~4K tokens (docs/benchmarks.md). A short needle-in-a-haystack sweep on the user's
own model and plan measures it: each fact is asked with a paraphrase that shares none of its key
words, so a hit is reading, not string matching. The profile is stored in the user's cache
folder, keyed by the model file's hash and the settings that shape its cache; the router then
stuffs only up to the measured effective length.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lcdoc.qa.profile import THRESHOLD, Profile, effective_length, model_sha256, profile_path

# (fact, paraphrased question, what the answer must contain): no key word of the question is in
# the fact except the place name, which many haystack sentences do not carry.
TEMPLATES = [
    ("The {place} depot keeps its spare keys in a {colour} tin under the stairs.",
     "Where are the extra keys for the {place} warehouse stored?", "{colour}"),
    ("Deliveries to the {place} office arrive every {day} morning.",
     "On which day do shipments reach the {place} branch?", "{day}"),
    ("The keeper of the {place} lighthouse is called {name}.",
     "Who looks after the beacon in {place}?", "{name}"),
    ("To open the {place} gate, type {number} on the keypad.",
     "What number unlocks the entrance at {place}?", "{number}"),
]
PLACES = ["Tromso", "Valparaiso", "Hobart", "Windhoek", "Ushuaia", "Nuuk", "Kirkwall", "Punta Arenas"]
COLOURS = ["crimson", "turquoise", "mustard", "lavender", "olive"]
DAYS = ["Tuesday", "Thursday", "Saturday", "Wednesday"]
NAMES = ["Ingrid Solberg", "Tomas Vaillant", "Aiko Brandt", "Mateo Quispe"]


@dataclass(frozen=True)
class CalTrial:
    length: int
    depth: int
    question: str
    expected: str
    found: bool
    answer: str
    seconds: float


def default_lengths(budget: int, native: int) -> list[int]:
    """Doublings from 1K up to the budget (the native context and the budget itself included)."""
    out, n = [], 1024
    while n < budget:
        out.append(n)
        n *= 2
    for extra in (native, budget):
        if 1024 <= extra <= budget and extra not in out:
            out.append(extra)
    return sorted(out)


def make_needle(rng: random.Random) -> tuple[str, str, str]:
    fact, question, answer = rng.choice(TEMPLATES)
    values = dict(place=rng.choice(PLACES), colour=rng.choice(COLOURS), day=rng.choice(DAYS),
                  name=rng.choice(NAMES), number=str(rng.randint(1000, 9999)))
    return fact.format(**values), question.format(**values), answer.format(**values)


def calibrate(engine, settings, lengths: list[int] | None = None,
              depths: tuple[int, ...] = (10, 50, 90), seed: int = 0,
              on_trial: Callable[[CalTrial, int, int], None] | None = None,
              full: bool = False) -> Profile:
    """Run the sweep on this engine (its model and plan), store the profile, return it. The
    sweep stops at the first length that falls below the threshold (longer ones cannot change
    the effective length, and they cost the most), unless full."""
    import tempfile

    from lcdoc.qa.ask import SYSTEM, ask
    from lcdoc.qa.needles import cut_to_tokens, default_haystack, plant
    from lcdoc.qa.route import context_budget

    s = settings.replace(answer_tokens=48)
    pre, suf, _ = engine.chat_parts(SYSTEM, "", TEMPLATES[0][1])
    # Paragraphs counted one by one come out a few percent shorter than the stuffed whole.
    budget = int(context_budget(engine.n_ctx, engine.count(pre + suf) + 64, s.answer_tokens) * 0.94)
    lengths = sorted(x for x in (lengths or default_lengths(budget, engine.arch.n_ctx_train))
                     if x <= budget) or [budget]
    text = default_haystack(max(lengths) * 6, seed)
    rng = random.Random(seed)
    trials: list[CalTrial] = []
    work = Path(tempfile.mkdtemp(prefix="lcdoc-calibrate-"))
    t_start = time.perf_counter()
    total = len(lengths) * len(depths)
    for length in lengths:
        paras = cut_to_tokens(text, length, engine.count)
        for depth in depths:
            fact, question, expected = make_needle(rng)
            hay = work / f"haystack-{length}-{depth}.txt"
            hay.write_text(plant(paras, [_Fact(fact)], depth))
            t0 = time.perf_counter()
            a = ask(question, [str(hay)], mode="stuff", engine=engine, settings=s)
            tr = CalTrial(length, depth, question, expected, expected.lower() in a.answer.lower(),
                          a.answer.replace("\n", " ")[:200], round(time.perf_counter() - t0, 2))
            trials.append(tr)
            hay.unlink()
            if on_trial:
                on_trial(tr, len(trials), total)
        if not full and sum(t.found for t in trials if t.length == length) < THRESHOLD * len(depths):
            break
    work.rmdir()
    lengths = sorted({t.length for t in trials})
    grid = {L: sum(t.found for t in trials if t.length == L) / len(depths) for L in lengths}
    prof = Profile(str(engine.path), model_sha256(engine.path), Path(engine.path).stat().st_size,
                   engine.cache_settings,
                   engine.n_ctx, effective_length(grid), {str(k): v for k, v in grid.items()},
                   [asdict(t) for t in trials], time.strftime("%Y-%m-%d"),
                   round(time.perf_counter() - t_start, 1))
    path = profile_path(engine.path, engine.cache_settings)
    from lcdoc.private import private_dir, write_private

    private_dir(path.parent)
    write_private(path, json.dumps(asdict(prof), indent=1))
    return prof


@dataclass(frozen=True)
class _Fact:
    fact: str  # what plant() inserts
