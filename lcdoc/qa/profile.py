"""The calibration profile: how far into its context a model, at one plan, finds a fact.

`lcdoc calibrate` (lcdoc.qa.calibrate) measures it; the router reads it here to know how much it
may stuff. Profiles live in the user's cache folder, keyed by the model file's hash and the
settings that shape its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lcdoc.qa.route import default_stuff_limit

THRESHOLD = 0.6  # a length holds when at least this share of its depths found the fact (2 of 3)
FORMAT = 1

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


def stuff_limit(model: Path, cache_settings: str, n_ctx_train: int
                ) -> tuple[int, str, Profile | None]:
    """How many tokens auto may stuff for this model and plan, why, and the profile if any."""
    prof = load_profile(model, cache_settings)
    if prof is not None:
        return prof.effective_length, "calibrated: " + prof.summary(), prof
    limit = default_stuff_limit(n_ctx_train)
    return limit, (f"not calibrated: stuffing up to {limit} tokens, half the native "
                   f"{n_ctx_train}-token context (the default; `lcdoc calibrate` measures this "
                   f"model and plan)"), None
