"""What lcdoc keeps on disk, listed and removed on request: indexes, the prompt cache, ONNX
exports, calibration profiles and the history."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from lcdoc.errors import IndexMissingError

CACHE_KINDS = ("prompt", "onnx", "calibration", "ocr", "history")


def _size(path: Path) -> int:
    """Bytes under a file or folder (links not followed)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


@dataclass(frozen=True)
class IndexInfo:
    """One index folder, as `lcdoc indexes` shows it."""

    name: str
    path: str
    documents: int
    chunks: int
    bytes: int
    embed_model: str
    embed_precision: str
    updated: float | None  # when a document was last indexed
    problem: str = ""  # why it could not be read, when it could not


def list_indexes(index_dir: Path) -> list[IndexInfo]:
    """Every index under the index folder, read-only; an unreadable one is listed with why."""
    out = []
    if not index_dir.is_dir():
        return out
    for folder in sorted(p for p in index_dir.iterdir() if p.is_dir() and not
                         p.name.startswith((".", "_"))):
        db = folder / "index.sqlite"
        if not db.exists():
            continue
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                docs, updated = con.execute("SELECT COUNT(*), MAX(indexed_at) FROM documents"
                                            ).fetchone()
                chunks = con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            finally:
                con.close()
            out.append(IndexInfo(folder.name, str(folder), docs, chunks, _size(folder),
                                 meta.get("embed_model", ""), meta.get("embed_precision", ""),
                                 updated))
        except sqlite3.Error as e:
            out.append(IndexInfo(folder.name, str(folder), 0, 0, _size(folder), "", "", None,
                                 f"cannot be read ({e})"))
    return out


def drop_index(name: str, index_dir: Path) -> Path:
    """Remove one index folder; IndexMissingError for a name that is not an index (nothing else
    is ever removed: the folder must hold an index.sqlite)."""
    from lcdoc.index.index import index_path

    folder = index_path(name, index_dir, allow_path=False)
    if not (folder / "index.sqlite").is_file():
        raise IndexMissingError(f"no such index: {name} (looked in {folder}); "
                                f"`lcdoc indexes` lists them")
    shutil.rmtree(folder)
    return folder


def cache_locations(index_dir: Path) -> dict[str, Path]:
    """Where each kind of cached data lives."""
    from lcdoc.app.history import default_path
    from lcdoc.index.onnx_export import cache_root
    from lcdoc.qa.profile import cache_dir

    return {"prompt": index_dir / ".prompt-cache", "onnx": cache_root(),
            "calibration": cache_dir() / "calibration", "ocr": cache_dir() / "ocr",
            "history": default_path()}


def cache_sizes(index_dir: Path) -> dict[str, tuple[str, int, int]]:
    """kind -> (where, bytes, files)."""
    out = {}
    for kind, path in cache_locations(index_dir).items():
        files = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else \
            int(path.is_file())
        if kind == "history":  # the database and its WAL files
            size = sum(_size(Path(f"{path}{s}")) for s in ("", "-wal", "-shm"))
        else:
            size = _size(path)
        out[kind] = (str(path), size, files)
    return out


def clear_cache(kind: str, index_dir: Path) -> dict[str, int]:
    """Remove one kind of cache (or all, history excepted unless named): kind -> bytes freed."""
    locations = cache_locations(index_dir)
    kinds = [k for k in locations if k != "history"] if kind == "all" else [kind]
    freed = {}
    for k in kinds:
        path = locations[k]
        if k == "history":
            size = sum(_size(Path(f"{path}{s}")) for s in ("", "-wal", "-shm"))
            for s in ("", "-wal", "-shm"):
                Path(f"{path}{s}").unlink(missing_ok=True)
        else:
            size = _size(path)
            if path.is_dir():
                shutil.rmtree(path)
        freed[k] = size
    return freed
