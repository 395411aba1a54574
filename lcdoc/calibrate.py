"""`lcdoc calibrate`: how far into its context this model, at this plan, really finds a fact.

A model's recall falls well before its window (RULER); for the packaged SmolLM2 stuffing lost to
retrieval past ~4K tokens (docs/benchmarks.md). A short needle-in-a-haystack sweep on the user's
own model and plan measures it: each fact is asked with a paraphrase that shares none of its key
words, so a hit is reading, not string matching. The profile is stored in the user's cache
folder, keyed by the model file's hash and the settings that shape its cache; the router then
stuffs only up to the measured effective length.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

THRESHOLD = 0.6  # a length holds when at least this share of its depths found the fact (2 of 3)
FORMAT = 1

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


@dataclass(frozen=True)
class Profile:
    model: str
    model_sha256: str
    model_size: int
    settings: str  # the cache-shaping settings (context, KV types, RoPE scaling, SWA, flash)
    n_ctx: int
    effective_length: int  # the longest length that held (and every shorter one); 0: none
    grid: dict  # {length: share of depths found}
    trials: list
    measured_at: str
    seconds: float

    def summary(self) -> str:
        cells = ", ".join(f"{int(k) // 1024 if int(k) >= 1024 else k}{'K' if int(k) >= 1024 else ''}"
                          f" {v:.0%}" for k, v in sorted(self.grid.items(), key=lambda x: int(x[0])))
        return (f"effective length {self.effective_length} tokens (lcdoc calibrate, "
                f"{self.measured_at}: found {cells})")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc"


def model_sha256(path: Path) -> str:
    """The model file's SHA-256, remembered per (path, size, mtime): hashed once per file."""
    path = Path(path).resolve()
    st = path.stat()
    memo = cache_dir() / "model-hashes.json"
    key = f"{path}:{st.st_size}:{int(st.st_mtime)}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        known[key] = h.hexdigest()
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    return known[key]


def profile_path(model: Path, settings: str) -> Path:
    digest = hashlib.sha256(f"{FORMAT}:{settings}".encode()).hexdigest()[:12]
    return cache_dir() / "calibration" / f"{model_sha256(model)[:16]}-{digest}.json"


def _hash_known_or_worth_it(path: Path) -> bool:
    """Hashing a multi-GB model costs seconds: only when its hash is remembered already, or some
    profile was measured on a file of exactly its size (the same model, copied or moved)."""
    path = Path(path).resolve()
    st = path.stat()
    try:
        if f"{path}:{st.st_size}:{int(st.st_mtime)}" in json.loads(
                (cache_dir() / "model-hashes.json").read_text()):
            return True
    except (OSError, ValueError):
        pass
    for p in (cache_dir() / "calibration").glob("*.json"):
        try:
            if json.loads(p.read_text()).get("model_size") == st.st_size:
                return True
        except (OSError, ValueError):
            continue
    return False


def load_profile(model: Path, settings: str) -> Profile | None:
    """The stored profile for this model file and cache settings (lcdoc.engine.plan's
    cache_settings), or None (uncalibrated)."""
    try:
        if not _hash_known_or_worth_it(model):
            return None
        d = json.loads(profile_path(model, settings).read_text())
        return Profile(**d)
    except (OSError, ValueError, TypeError):
        return None


def effective_length(grid: dict[int, float], threshold: float = THRESHOLD) -> int:
    """The longest length whose share found, and every shorter length's, reaches the threshold."""
    best = 0
    for length in sorted(grid):
        if grid[length] < threshold:
            break
        best = length
    return best


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

    from lcdoc.ask import SYSTEM, ask
    from lcdoc.eval.haystack import default_haystack
    from lcdoc.eval.niah import cut_to_tokens, plant
    from lcdoc.route import context_budget

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
