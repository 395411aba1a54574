"""Read a GGUF file's key-value metadata without loading (or even mapping) its weights."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from lcdoc.errors import ModelMissingError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# Arrays longer than this (the tokenizer's vocabulary, merges, scores) are skipped, not kept.
MAX_KEPT_ARRAY = 4096


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    return f.read(n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == STRING:
        return _string(f)
    if vtype == ARRAY:
        etype, n = _read(f, "<I"), _read(f, "<Q")
        if n > MAX_KEPT_ARRAY:
            if etype in _SCALARS:
                f.seek(n * struct.calcsize(_SCALARS[etype]), 1)
            else:
                for _ in range(n):
                    _value(f, etype)
            return f"<array of {n}>"
        return [_value(f, etype) for _ in range(n)]
    raise ValueError(f"unknown GGUF value type {vtype}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """All metadata keys of a GGUF (large arrays summarised), plus `gguf.n_tensors`."""
    p = Path(path)
    if not p.is_file():
        raise ModelMissingError(f"{p}: no such model file")
    try:
        with open(p, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelMissingError(f"{p}: not a GGUF model file (bad magic)")
            version = _read(f, "<I")
            if version < 2:
                raise ModelMissingError(f"{p}: GGUF version {version} is too old")
            n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
            meta: dict[str, Any] = {"gguf.version": version, "gguf.n_tensors": n_tensors}
            for _ in range(n_kv):
                key = _string(f)
                meta[key] = _value(f, _read(f, "<I"))
            return meta
    except (EOFError, ValueError, struct.error) as e:
        raise ModelMissingError(f"{p}: truncated or corrupt GGUF header ({e})") from e
