"""How fast each model and plan prefills and decodes here, measured on real answers and kept
across runs, so a route's cost can be predicted before it is paid.

The book is a small JSON file in the user's cache folder, keyed by the model file, the settings
that shape its cache and where it runs; each answer updates a moving average.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# A prompt shorter than this, or a handful of answer tokens, says little about the speed.
MIN_PREFILL_TOKENS = 256
MIN_DECODE_TOKENS = 8
WEIGHT = 0.3  # of the newest measurement in the moving average


@dataclass(frozen=True)
class Speed:
    """Measured speeds of one model and plan. A prompt token at position p costs (1 + attention
    * p) times one at the start of the context, so prefill_tok_s is the rate at the start and a
    long prompt's time grows faster than its length (attention: fitted from prompts of several
    lengths, else the model's shape, Arch.attention_cost)."""

    prefill_tok_s: float | None
    decode_tok_s: float | None
    samples: int = 0
    attention: float = 0.0
    fitted: bool = False  # attention fitted to prompts measured here, not the model's shape

    def prefill_work(self, n: int, start: int = 0) -> float:
        """Prefilling positions start..n, in tokens at the start of the context."""
        return (n - start) + self.attention * (n * n - start * start) / 2

    def prefill_seconds(self, n: int, start: int = 0) -> float | None:
        if not self.prefill_tok_s:
            return None
        return self.prefill_work(n, start) / self.prefill_tok_s

    def predict(self, prefill_tokens: int, answer_tokens: int, start: int = 0) -> float | None:
        """Seconds to prefill positions start..start+prefill_tokens and answer, or None while a
        speed is unmeasured."""
        pre = self.prefill_seconds(start + prefill_tokens, start)
        if pre is None or not self.decode_tok_s:
            return None
        return pre + answer_tokens / self.decode_tok_s

    def measured(self, prefill_tokens: int, seconds: float, start: int = 0) -> "Speed":
        """This speed with its prefill rate taken from one prompt just measured."""
        work = self.prefill_work(start + prefill_tokens, start)
        return replace(self, prefill_tok_s=work / seconds if seconds > 0 else self.prefill_tok_s)


def book_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc" / "speeds.json"


def speed_key(model_id: str, cache_settings: str, device: str, gpu_layers: int,
              cublas_min_batch: int = 0, n_ubatch: int = 512) -> str:
    """One model and plan: its file, cache settings, device, GPU layers, prompt kernels and
    micro-batch size."""
    return f"{model_id}|{cache_settings}|{device}|{gpu_layers}" + (
        f"|cublas{cublas_min_batch}" if cublas_min_batch else "") + (
        f"|ub{n_ubatch}" if n_ubatch != 512 else "")


def plan_key(eng) -> str:
    """The book's key for an engine (lcdoc.engine.llm.Engine)."""
    p = eng.plan
    return speed_key(eng.model_id, eng.cache_settings, p.device, p.n_gpu_layers,
                     getattr(p, "cublas_min_batch", 0), getattr(p, "n_ubatch", 512))


def _read() -> dict:
    try:
        d = json.loads(book_path().read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def lookup(key: str, attention_prior: float = 0.0) -> Speed:
    """The speeds measured for this model and plan (unmeasured: None each); the attention cost
    fitted here, else attention_prior (the model's shape)."""
    d = _read().get(key) or {}
    try:
        fitted = d.get("attention") if d.get("attention_fitted") else None
        return Speed(d.get("prefill_tok_s"), d.get("decode_tok_s"), int(d.get("samples", 0)),
                     float(fitted if fitted is not None else attention_prior), fitted is not None)
    except (TypeError, ValueError):
        return Speed(None, None, 0, attention_prior)


def blend(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    return new if old is None else (1 - WEIGHT) * old + WEIGHT * new


# Prompts kept per model and plan for the fit: (start, end, seconds).
MAX_POINTS = 12
# A fit needs prompts whose lengths differ at least this much; else the shape's cost is used.
FIT_SPREAD = 1.5


def fit_prefill(points: list[list[float]]) -> tuple[float, float] | None:
    """(rate at the start of the context, attention cost) by least squares over measured
    prompts, seconds = ((n - m) + a (n^2 - m^2) / 2) / rate; None when their lengths are too
    alike to tell the two apart, or the fit makes no sense."""
    if len(points) < 2:
        return None
    ends = [p[1] for p in points]
    if max(ends) < FIT_SPREAD * min(ends):
        return None
    x1 = [p[1] - p[0] for p in points]
    x2 = [(p[1] ** 2 - p[0] ** 2) / 2 for p in points]
    t = [p[2] for p in points]
    s11, s12, s22 = sum(a * a for a in x1), sum(a * b for a, b in zip(x1, x2)), sum(b * b for b in x2)
    r1, r2 = sum(a * y for a, y in zip(x1, t)), sum(b * y for b, y in zip(x2, t))
    det = s11 * s22 - s12 * s12
    if det <= 0:
        return None
    u, v = (r1 * s22 - r2 * s12) / det, (s11 * r2 - s12 * r1) / det
    if v < 0:  # no measurable growth: linear
        u, v = r1 / s11, 0.0
    if u <= 0:
        return None
    return 1 / u, v / u


def record(key: str, prefill_tokens: int, prefill_s: float, answer_tokens: int,
           generate_s: float, attention_prior: float = 0.0, start: int = 0) -> Speed:
    """Fold one answer's measured speeds into the book (prefill_tokens after `start` restored
    ones); the speeds now."""
    long_enough = prefill_tokens >= MIN_PREFILL_TOKENS and prefill_s > 0
    dec = answer_tokens / generate_s if answer_tokens >= MIN_DECODE_TOKENS and generate_s > 0 \
        else None
    book = _read()
    entry = dict(book.get(key) or {})
    old = lookup(key, attention_prior)
    if not long_enough and dec is None:
        return old
    points = [p for p in entry.get("points", []) if isinstance(p, list) and len(p) == 3]
    rate, attention, fitted = old.prefill_tok_s, old.attention, bool(entry.get("attention_fitted"))
    if long_enough:
        points = (points + [[start, start + prefill_tokens, round(prefill_s, 4)]])[-MAX_POINTS:]
        fit = fit_prefill(points)
        if fit:
            (rate, attention), fitted = fit, True
        else:
            rate = blend(old.prefill_tok_s, old.measured(prefill_tokens, prefill_s, start).prefill_tok_s)
    now = Speed(rate, blend(old.decode_tok_s, dec), old.samples + 1, attention, fitted)
    entry.update(asdict(now), points=points, attention_fitted=fitted)
    entry.pop("fitted", None)
    book[key] = entry
    _write(book)
    return now


def _write(book: dict) -> None:
    path = book_path()
    try:
        from lcdoc.private import private_dir, write_private

        private_dir(path.parent)
        write_private(path, json.dumps(book, indent=1))
    except OSError:
        pass  # an unwritable cache costs a prediction, nothing more


# Reading a saved state back, until measured here: about what a local SSD gives.
DEFAULT_RESTORE_BPS = 1.0e9
# A state is written for the next process only when reading it back is predicted to take less
# than this share of prefilling its tokens again: on an H100 an 8B model prefills 80K tokens in
# 13 s, and reading their 10.5 GB state back took 10.7 s; writing it was not worth its seconds.
WORTH_SAVING = 0.5


def restore_key(folder: Path) -> str:
    return f"restore|{Path(folder).resolve()}"


def restore_bps(folder: Path) -> float:
    """Bytes a second a saved state was read back at from this folder (default: an SSD's)."""
    d = _read().get(restore_key(folder)) or {}
    try:
        return float(d.get("bps") or DEFAULT_RESTORE_BPS)
    except (TypeError, ValueError):
        return DEFAULT_RESTORE_BPS


def record_restore(folder: Path, nbytes: int, seconds: float) -> None:
    """One state read back from disk: fold its speed into the book."""
    if nbytes < 64 << 20 or seconds <= 0:
        return  # small states say little about the disk
    book = _read()
    old = (book.get(restore_key(folder)) or {}).get("bps")
    book[restore_key(folder)] = {"bps": blend(old, nbytes / seconds)}
    _write(book)


def worth_saving(nbytes: int, n_tokens: int, prefill_tok_s: float | None, folder: Path) -> bool:
    """Whether the next process would restore this state much faster than it would prefill it."""
    if not prefill_tok_s:
        return True  # unmeasured: keep it, as before
    return nbytes / restore_bps(folder) < WORTH_SAVING * n_tokens / prefill_tok_s
