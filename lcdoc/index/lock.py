"""One writer per index: a second waits a while for the first, then fails with a clear message."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from lcdoc.errors import IndexLockedError, IndexWriteError


class WriteLock:
    """An advisory lock file; the OS releases it if the holder dies (kill -9 included)."""

    def __init__(self, folder: Path, wait_s: float = 10.0) -> None:
        self.path = folder / "write.lock"
        self.wait_s = wait_s
        self.fd: int | None = None

    def __enter__(self) -> "WriteLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise IndexWriteError(f"{self.path.parent}: cannot write the index "
                                  f"({e.strerror})") from e
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(self.fd)
                    self.fd = None
                    raise IndexLockedError(
                        f"{self.path.parent}: another lcdoc process (pid {holder}) is writing this "
                        f"index; waited {self.wait_s:.0f} s. Try again when it finishes."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
