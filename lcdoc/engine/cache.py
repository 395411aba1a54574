"""The prompt cache: llama.cpp's state after a long document prefix, in memory and on disk.

A second question about the same stuffed document restores this state and prefills only the
question. Keys cover the model file, every setting that changes the cache's contents, and the
prefix tokens themselves, so a stale entry can never be restored.
"""

from __future__ import annotations

import hashlib
import os
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
    """What must be restored to continue after a prefix: llama.cpp's state and its token ids.

    `llama_state` is any buffer (a ctypes array straight from llama.cpp, or bytes read from disk):
    at 128K tokens of an 8B model it is ~15 GB, so it is never copied needlessly.
    """

    n_tokens: int
    input_ids: np.ndarray
    llama_state: object
    size: int

    def write(self, path: Path) -> None:
        ids = np.ascontiguousarray(self.input_ids[: self.n_tokens], dtype=np.int32)
        with open(path, "wb") as f:
            f.write(MAGIC + np.array([self.n_tokens, self.size], dtype=np.int64).tobytes())
            f.write(ids.tobytes())
            f.write(memoryview(self.llama_state).cast("B")[: self.size])

    @classmethod
    def read(cls, path: Path) -> "Snapshot":
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a snapshot")
            n_tokens, size = np.frombuffer(f.read(16), dtype=np.int64)
            ids = np.frombuffer(f.read(4 * int(n_tokens)), dtype=np.int32).copy()
            buf = np.empty(int(size), dtype=np.uint8)
            if f.readinto(memoryview(buf)) != size:
                raise ValueError("truncated snapshot")
        return cls(int(n_tokens), ids, buf, int(size))


MAGIC = b"LCDOCKV1"


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
                    snap = Snapshot.read(path)
                    os.utime(path)  # recency for pruning
                    self._remember(key, snap)
                    return snap
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
        return None

    def put(self, key: str, snap: Snapshot, persist: bool = True) -> None:
        self._remember(key, snap)
        if persist and self.folder:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"{key}.kvstate"
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                snap.write(tmp)
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
