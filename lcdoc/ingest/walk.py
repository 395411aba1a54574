"""Expand files and folders into the files to read, with a reason for each one skipped."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lcdoc.ingest.document import Document
from lcdoc.errors import InputFileError
from lcdoc.ingest.loaders import SNIFF_BYTES, load_path, looks_binary


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why, so the user can see every one by name."""

    path: str
    reason: str


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def walk_paths(
    paths: list[str | Path],
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    max_bytes: int = 200 * 1024 * 1024,
) -> tuple[list[Path], list[Skipped]]:
    """Files under the given paths (recursively), skipping hidden, binary, oversized and excluded ones."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()

    def consider(p: Path, rel: str, explicit: bool) -> None:
        if os.path.realpath(p) in seen:
            return
        if not explicit:
            if include and not _matches(rel, include):
                return
            if exclude and _matches(rel, exclude):
                return
        try:
            st = p.stat()
        except OSError as e:
            skipped.append(Skipped(str(p), f"cannot read ({e.strerror})"))
            return
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; a device never ends
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            skipped.append(Skipped(str(p), f"not a regular file ({kind})"))
            return
        size = st.st_size
        if size > max_bytes:
            skipped.append(Skipped(str(p), f"larger than the {max_bytes // 2**20} MiB limit"))
            return
        if size == 0:
            skipped.append(Skipped(str(p), "empty file"))
            return
        try:
            with open(p, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError as e:
            skipped.append(Skipped(str(p), f"cannot read ({e.strerror})"))
            return
        is_pdf = head.lstrip()[:5] == b"%PDF-"
        is_gz = head[:2] == b"\x1f\x8b" and p.name.endswith(".gz")
        if not (is_pdf or is_gz) and looks_binary(head):
            skipped.append(Skipped(str(p), "binary file"))
            return
        seen.add(os.path.realpath(p))
        files.append(p)

    for given in paths:
        root = Path(given)
        if root.is_file():
            consider(root, root.name, explicit=True)
        elif root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fn in sorted(filenames):
                    p = Path(dirpath) / fn
                    rel = p.relative_to(root).as_posix()
                    if fn.startswith("."):
                        if not exclude or not _matches(rel, exclude):
                            skipped.append(Skipped(str(p), "hidden file"))
                        continue
                    if p.is_symlink() and not p.exists():
                        try:
                            p.stat()
                            why = "broken symbolic link"
                        except OSError as e:
                            why = ("symbolic link loop" if e.errno == errno.ELOOP
                                   else "broken symbolic link")
                        skipped.append(Skipped(str(p), why))
                        continue
                    consider(p, rel, explicit=False)
        elif root.exists():
            skipped.append(Skipped(str(root), "not a regular file or folder"))
        else:
            skipped.append(Skipped(str(root), "no such file or folder"))
    return files, skipped


def read_documents(paths: list[str | Path], include: tuple[str, ...] = (),
                   exclude: tuple[str, ...] = ()) -> tuple[list[Document], list[Skipped]]:
    """Every readable document under the paths, and each file left out or failed, named with
    why; hidden files are left out silently. One bad file never stops the others."""
    files, skipped = walk_paths(paths, include, exclude)
    failed = [x for x in skipped if x.reason != "hidden file"]
    docs = []
    for f in files:
        try:
            docs.append(load_path(f))
        except InputFileError as e:
            failed.append(Skipped(e.path, e.problem))
    return docs, failed
