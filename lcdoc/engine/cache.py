"""The prompt cache: llama.cpp's state after a long document prefix, in memory and on disk.

A second question about the same stuffed document restores this state and prefills only the
question. Keys cover the model file, every setting that changes the cache's contents, and the
prefix tokens themselves, so a stale entry can never be restored.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# States are large (SmolLM2: 22.5 KiB per token, 140 MiB for a 6K-token document): keep a couple
# in memory and a bounded number of bytes on disk.
MEMORY_ENTRIES = 2
DISK_BUDGET_BYTES = 4 * 2**30


@dataclass
class Snapshot:
    """What must be restored to continue after a prefix: llama.cpp's state and its token ids."""

    n_tokens: int
    input_ids: np.ndarray
    llama_state: bytes
    seed: int


def prefix_key(model_id: str, settings: str, tokens: Sequence[int]) -> str:
    """Content hash of model, cache-shaping settings and the prefix's tokens."""
    h = hashlib.sha256()
    h.update(model_id.encode())
    h.update(settings.encode())
    h.update(np.asarray(tokens, dtype=np.int32).tobytes())
    return h.hexdigest()[:32]


class PromptCache:
    """LRU of snapshots in memory, backed by a folder of snapshot files."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.mem: OrderedDict[str, Snapshot] = OrderedDict()

    def get(self, key: str) -> Snapshot | None:
        if key in self.mem:
            self.mem.move_to_end(key)
            return self.mem[key]
        if self.folder:
            path = self.folder / f"{key}.kvstate"
            if path.exists():
                try:
                    with open(path, "rb") as f:
                        snap = pickle.load(f)
                    os.utime(path)  # recency for pruning
                    self._remember(key, snap)
                    return snap
                except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
                    path.unlink(missing_ok=True)
        return None

    def put(self, key: str, snap: Snapshot, persist: bool = True) -> None:
        self._remember(key, snap)
        if persist and self.folder:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"{key}.kvstate"
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                with open(tmp, "wb") as f:
                    pickle.dump(snap, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
                self._prune()
            except OSError:
                pass  # a full or read-only disk costs the next run a prefill, nothing more

    def _remember(self, key: str, snap: Snapshot) -> None:
        self.mem[key] = snap
        self.mem.move_to_end(key)
        while len(self.mem) > MEMORY_ENTRIES:
            self.mem.popitem(last=False)

    def _prune(self) -> None:
        files = sorted(self.folder.glob("*.kvstate"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for p in files:
            total += p.stat().st_size
            if total > DISK_BUDGET_BYTES:
                p.unlink(missing_ok=True)
