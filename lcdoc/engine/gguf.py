"""Read a GGUF file's key-value metadata without loading (or even mapping) its weights."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from lcdoc.errors import ModelMissingError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# Arrays longer than this (the tokenizer's vocabulary, merges, scores) are skipped, not kept.
MAX_KEPT_ARRAY = 4096


class _Cursor:
    """Reads GGUF values from a mapped file at an offset; only the header's pages are touched."""

    def __init__(self, buf) -> None:
        self.buf, self.off = buf, 0

    def read(self, fmt: str) -> Any:
        try:
            (v,) = struct.unpack_from(fmt, self.buf, self.off)
        except struct.error as e:
            raise EOFError from e
        self.off += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.read("<Q")
        end = self.off + n
        if end > len(self.buf):
            raise EOFError
        text = bytes(self.buf[self.off:end]).decode("utf-8", errors="replace")
        self.off = end
        return text

    def skip_strings(self, n: int) -> None:
        """Past n strings without decoding them (a vocabulary, its merges: 400K of them)."""
        buf, off, unpack = self.buf, self.off, struct.Struct("<Q").unpack_from
        size = len(buf)
        for _ in range(n):
            if off + 8 > size:
                raise EOFError
            off += 8 + unpack(buf, off)[0]
        if off > size:
            raise EOFError
        self.off = off

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.read(_SCALARS[vtype])
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            etype, n = self.read("<I"), self.read("<Q")
            if n > MAX_KEPT_ARRAY:
                if etype in _SCALARS:
                    self.off += n * struct.calcsize(_SCALARS[etype])
                elif etype == STRING:
                    self.skip_strings(n)
                else:
                    for _ in range(n):
                        self.value(etype)
                return f"<array of {n}>"
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """All metadata keys of a GGUF (large arrays summarised), plus `gguf.n_tensors`."""
    import mmap

    p = Path(path)
    if not p.is_file():
        raise ModelMissingError(f"{p}: no such model file")
    try:
        with open(p, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelMissingError(f"{p}: not a GGUF model file (bad magic)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                c = _Cursor(memoryview(mm))
                try:
                    c.off = 4
                    version = c.read("<I")
                    if version < 2:
                        raise ModelMissingError(f"{p}: GGUF version {version} is too old")
                    n_tensors, n_kv = c.read("<Q"), c.read("<Q")
                    meta: dict[str, Any] = {"gguf.version": version, "gguf.n_tensors": n_tensors}
                    for _ in range(n_kv):
                        key = c.string()
                        meta[key] = c.value(c.read("<I"))
                    return meta
                finally:
                    c.buf.release()
    except (EOFError, ValueError, struct.error, RecursionError) as e:  # arrays nested past reason
        raise ModelMissingError(f"{p}: truncated or corrupt GGUF header ({type(e).__name__} {e})") from e
