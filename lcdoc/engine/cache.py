"""The prompt cache: llama.cpp's state after a long document prefix, in memory and on disk.

A second question about the same stuffed document restores this state and prefills only the
question. Keys cover the model file, every setting that changes the cache's contents, and the
prefix tokens themselves, so a stale entry can never be restored.

States are large (SmolLM2: 22.5 KiB a token; an 8B model at 100K tokens: 14 GB), so both tiers
are budgeted in bytes: a state larger than a budget is not kept there, and never evicts others.
Disk writes run on a background thread, so an answer never waits for one.
"""

from __future__ import annotations

import hashlib
import os
import struct
import shutil
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

MAGIC = b"LCDOCKV2"  # V2 adds a checksum; a V1 file is a miss, and removed
CRC_BLOCK = 64 << 20  # checksummed while read or written, in blocks: no second copy of a state
SUFFIX = ".kvstate"
# Without a setting, the disk cache may use this share of the free space where it lives (plus
# what it already holds), so it can never be what fills a disk.
DISK_SHARE = 0.25
# Without a setting, memory keeps states up to this share of the RAM available at start.
MEMORY_SHARE = 0.25
# A temporary file this old whose writer is gone was left by a kill.
STALE_TMP_S = 60.0
# How long a reader waits for another process still writing the state it wants (15 GB at
# ~1 GB/s), before prefilling instead.
WRITER_WAIT_S = 60.0


@dataclass
class Snapshot:
    """What must be restored to continue after a prefix: llama.cpp's state and its token ids.

    `llama_state` is any buffer (a numpy array straight from llama.cpp, or bytes read from disk):
    at 128K tokens of an 8B model it is ~15 GB, so it is never copied needlessly.
    """

    n_tokens: int
    input_ids: np.ndarray
    llama_state: object
    size: int

    @property
    def nbytes(self) -> int:
        return int(self.size) + 4 * int(self.n_tokens)

    def write(self, path: Path) -> None:
        """Header, token ids, llama.cpp's state, then a CRC-32 over all of it: a state damaged
        on disk (a flipped bit, a torn copy) is never restored into a context."""
        from lcdoc.private import opener

        ids = np.ascontiguousarray(self.input_ids[: self.n_tokens], dtype=np.int32).tobytes()
        head = MAGIC + np.array([self.n_tokens, self.size], dtype=np.int64).tobytes()
        state = memoryview(self.llama_state).cast("B")[: self.size]
        crc = 0
        with open(path, "wb", opener=opener) as f:
            for part in (head, ids, state):
                for lo in range(0, len(part), CRC_BLOCK):
                    block = part[lo : lo + CRC_BLOCK]
                    crc = zlib.crc32(block, crc)
                    f.write(block)
            f.write(struct.pack("<I", crc))

    @classmethod
    def read(cls, path: Path) -> "Snapshot":
        """The state in a file, or ValueError when it is not whole and unchanged."""
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 16)
            if head[: len(MAGIC)] != MAGIC:
                raise ValueError("not a snapshot of this version")
            if len(head) != len(MAGIC) + 16:
                raise ValueError("truncated snapshot")
            n_tokens, size = (int(x) for x in np.frombuffer(head[len(MAGIC):], dtype=np.int64))
            if n_tokens < 0 or size < 0 or \
                    path.stat().st_size != len(MAGIC) + 16 + 4 * n_tokens + size + 4:
                raise ValueError("truncated snapshot")
            ids_bytes = f.read(4 * n_tokens)
            crc = zlib.crc32(ids_bytes, zlib.crc32(head))
            buf = np.empty(size, dtype=np.uint8)
            view = memoryview(buf)
            for lo in range(0, size, CRC_BLOCK):
                part = view[lo : lo + CRC_BLOCK]
                if f.readinto(part) != len(part):
                    raise ValueError("truncated snapshot")
                crc = zlib.crc32(part, crc)
            stored = f.read(4)
            if len(stored) != 4 or struct.unpack("<I", stored)[0] != crc:
                raise ValueError("checksum mismatch: the state was damaged on disk")
        ids = np.frombuffer(ids_bytes, dtype=np.int32).copy()
        return cls(n_tokens, ids, buf, size)


def prefix_key(model_id: str, settings: str, tokens: Sequence[int]) -> str:
    """Content hash of model, cache-shaping settings and the prefix's tokens."""
    h = hashlib.sha256()
    h.update(model_id.encode())
    h.update(settings.encode())
    h.update(np.asarray(tokens, dtype=np.int32).tobytes())
    return h.hexdigest()[:32]


def disk_budget(folder: Path, setting_bytes: int | None = None) -> int:
    """Bytes the disk tier may hold: the setting, else a share of the free space (plus its own)."""
    if setting_bytes is not None:
        return max(0, int(setting_bytes))
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return 0
    held = sum(p.stat().st_size for p in folder.glob(f"*{SUFFIX}")) if folder.is_dir() else 0
    return int((free + held) * DISK_SHARE)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _tmp_pid(path: Path) -> int:
    """The writer's pid in a temporary file's name (-1 when it has none)."""
    try:
        return int(path.name.rsplit(".tmp-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


class PromptCache:
    """LRU of snapshots in memory (a byte budget), backed by a folder of snapshot files."""

    def __init__(self, folder: Path | None, memory_bytes: int | None = None,
                 disk_bytes: int | None = None) -> None:
        from lcdoc.engine.system import ram_available

        self.folder = folder
        self.memory_budget = int(memory_bytes if memory_bytes is not None
                                 else ram_available() * MEMORY_SHARE)
        self.disk_setting = disk_bytes
        self.mem: OrderedDict[str, Snapshot] = OrderedDict()
        self._writers: list[threading.Thread] = []
        self._lock = threading.Lock()  # the folder: one writer prunes at a time
        self.last_read: tuple[int, float] | None = None  # (bytes, seconds) of the last disk read
        if folder and folder.is_dir():
            self.clean_stale_tmp()

    # --- reading --------------------------------------------------------------------------
    def get(self, key: str) -> Snapshot | None:
        if key in self.mem:
            self.mem.move_to_end(key)
            return self.mem[key]
        path = self._path(key)
        if path is None:
            return None
        if not path.exists() and not self._wait_for_writer(path):
            return None
        try:
            t0 = time.perf_counter()
            snap = Snapshot.read(path)
            self.last_read = (snap.nbytes, time.perf_counter() - t0)
            os.utime(path)  # recency for pruning
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # truncated or foreign: a miss, and gone for good
            return None
        self._remember(key, snap)
        return snap

    def __contains__(self, key: str) -> bool:
        path = self._path(key)
        return key in self.mem or bool(path and path.exists())

    def discard(self, key: str) -> None:
        """Forget a state everywhere (llama.cpp refused it)."""
        self.mem.pop(key, None)
        path = self._path(key)
        if path is not None:
            path.unlink(missing_ok=True)

    # --- writing --------------------------------------------------------------------------
    def put(self, key: str, snap: Snapshot, persist: bool = True) -> None:
        """Keep a state in memory (if it fits the budget) and write it to disk in the background."""
        self._remember(key, snap)
        if persist and self.folder is not None and self.fits_disk(snap.nbytes):
            t = threading.Thread(target=self._write, args=(key, snap), daemon=True,
                                 name="lcdoc-cache-write")
            t.start()
            self._writers.append(t)

    def write_detached(self, key: str, snap: Snapshot) -> None:
        """Write a state to disk in a forked child that outlives this process, so an exiting
        command does not hold its caller for a write of gigabytes. The child touches no GPU and
        no standard stream, and leaves with os._exit; a reader that wants this state meanwhile
        waits for it (get). Where fork is missing, the write happens here."""
        self.wait()  # no writer thread holds the folder's lock across the fork
        from lcdoc import private  # noqa: F401  (imported before the fork, not in the child)

        try:
            pid = os.fork()
        except (AttributeError, OSError):
            self._write(key, snap)
            return
        if pid:
            return
        try:  # the child
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            # Every other descriptor goes, the GPU driver's among them: the GPU memory the
            # parent held is freed when the parent exits, not when this write ends.
            os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
            self._write(key, snap)
        finally:
            os._exit(0)

    def fits_disk(self, nbytes: int) -> bool:
        """Whether a state of this size may be written at all (larger than the budget: never)."""
        return self.folder is not None and nbytes <= disk_budget(self.folder, self.disk_setting)

    def wait(self) -> None:
        """Finish background writes (a process about to exit calls this)."""
        for t in self._writers:
            t.join()
        self._writers.clear()

    def _write(self, key: str, snap: Snapshot) -> None:
        assert self.folder is not None
        try:
            with self._lock:
                from lcdoc.private import private_dir

                private_dir(self.folder)  # states decode back to the documents' text
                budget = disk_budget(self.folder, self.disk_setting)
                if snap.nbytes > budget:
                    return
                self._make_room(budget - snap.nbytes)
            path = self._path(key)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            snap.write(tmp)
            os.replace(tmp, path)
        except OSError:
            pass  # a full or read-only disk costs the next run a prefill, nothing more
        finally:
            for p in self.folder.glob(f"*.tmp-{os.getpid()}-{threading.get_ident()}"):
                p.unlink(missing_ok=True)

    def _make_room(self, room: int) -> None:
        """Evict least recently used files until the folder holds at most `room` bytes."""
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= room:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)

    def _wait_for_writer(self, path: Path) -> bool:
        """Whether the state appeared after waiting for another process still writing it (an
        exiting `lcdoc ask` hands its write to a child): restoring it beats prefilling again."""
        deadline = time.monotonic() + WRITER_WAIT_S
        while time.monotonic() < deadline:
            writers = [p for p in path.parent.glob(f"{path.name}.tmp-*")
                       if _pid_alive(_tmp_pid(p)) and _tmp_pid(p) != os.getpid()]
            if path.exists():
                return True
            if not writers:
                return path.exists()
            time.sleep(0.05)
        return path.exists()

    def clean_stale_tmp(self) -> None:
        """Remove temporary files that a killed writer left (its process gone, or old)."""
        now = time.time()
        for p in self.folder.glob(f"*{SUFFIX}.tmp-*"):
            pid = _tmp_pid(p)
            try:
                old = now - p.stat().st_mtime > STALE_TMP_S
            except OSError:
                continue
            if pid != os.getpid() and (not _pid_alive(pid) or old):
                p.unlink(missing_ok=True)

    # --- memory ---------------------------------------------------------------------------
    def _remember(self, key: str, snap: Snapshot) -> None:
        if snap.nbytes > self.memory_budget:
            return
        self.mem[key] = snap
        self.mem.move_to_end(key)
        while sum(s.nbytes for s in self.mem.values()) > self.memory_budget:
            self.mem.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return self.folder / f"{key}{SUFFIX}" if self.folder is not None else None
