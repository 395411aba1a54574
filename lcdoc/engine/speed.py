"""How fast each model and plan prefills and decodes here, measured on real answers and kept
across runs, so a route's cost can be predicted before it is paid.

The book is a small JSON file in the user's cache folder, keyed by the model file, the settings
that shape its cache and where it runs; each answer updates a moving average.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# A prompt shorter than this, or a handful of answer tokens, says little about the speed.
MIN_PREFILL_TOKENS = 256
MIN_DECODE_TOKENS = 8
WEIGHT = 0.3  # of the newest measurement in the moving average


@dataclass(frozen=True)
class Speed:
    prefill_tok_s: float | None
    decode_tok_s: float | None
    samples: int = 0

    def predict(self, prefill_tokens: int, answer_tokens: int) -> float | None:
        """Seconds to prefill and answer, or None while a speed is unmeasured."""
        if not self.prefill_tok_s or not self.decode_tok_s:
            return None
        return prefill_tokens / self.prefill_tok_s + answer_tokens / self.decode_tok_s


def book_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc" / "speeds.json"


def speed_key(model_id: str, cache_settings: str, device: str, gpu_layers: int) -> str:
    return f"{model_id}|{cache_settings}|{device}|{gpu_layers}"


def _read() -> dict:
    try:
        d = json.loads(book_path().read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def lookup(key: str) -> Speed:
    """The speeds measured for this model and plan (unmeasured: None each)."""
    d = _read().get(key) or {}
    try:
        return Speed(d.get("prefill_tok_s"), d.get("decode_tok_s"), int(d.get("samples", 0)))
    except (TypeError, ValueError):
        return Speed(None, None)


def blend(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    return new if old is None else (1 - WEIGHT) * old + WEIGHT * new


def record(key: str, prefill_tokens: int, prefill_s: float, answer_tokens: int,
           generate_s: float) -> Speed:
    """Fold one answer's measured speeds into the book; the speeds now."""
    pre = prefill_tokens / prefill_s if prefill_tokens >= MIN_PREFILL_TOKENS and prefill_s > 0 \
        else None
    dec = answer_tokens / generate_s if answer_tokens >= MIN_DECODE_TOKENS and generate_s > 0 \
        else None
    old = lookup(key)
    if pre is None and dec is None:
        return old
    now = Speed(blend(old.prefill_tok_s, pre), blend(old.decode_tok_s, dec), old.samples + 1)
    book = _read()
    book[key] = asdict(now)
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
