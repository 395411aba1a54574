"""Expand files and folders into the files to read, with a reason for each one skipped."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lcdoc.ingest.document import Document
from lcdoc.errors import InputFileError
from lcdoc.ingest.archive import ZIP_MAGIC, sniff_container
from lcdoc.ingest.loaders import OLE2_MAGIC, SNIFF_BYTES, load_path, looks_binary

# Names of the zip-based formats: a damaged one is read (and named as damaged), not skipped.
DOCUMENT_SUFFIXES = (".docx", ".pptx", ".odt", ".odp", ".ods", ".epub")
# Reasons that are faults (a file meant to be read), not choices (hidden, binary, too large).
CANNOT_READ = "cannot read"
BROKEN_LINKS = ("broken symbolic link", "symbolic link loop")


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why, so the user can see every one by name."""

    path: str
    reason: str

    @property
    def fault(self) -> bool:
        """Meant to be read and could not be (unreadable, a broken link or loop), rather than
        left out on purpose (hidden, binary, empty, too large, a link outside)."""
        return self.reason.startswith(CANNOT_READ) or self.reason in BROKEN_LINKS


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _tree(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """(folder, subfolder names, file names) top-down, sorted, hidden folders and symlinked
    folders not entered; iterative, so a tree nested thousands deep is walked, not a
    RecursionError (os.walk recurses before Python 3.12)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        dirs, files = [], []
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(e.name)
        dirs = [d for d in dirs if not d.startswith(".")]
        yield folder, dirs, files
        stack.extend(folder / d for d in reversed(dirs))


def _outside(p: Path, roots: list[str]) -> str | None:
    """The target of a symbolic link that leads outside every folder given, else None."""
    target = os.path.realpath(p)
    for r in roots:
        if target == r or target.startswith(r.rstrip(os.sep) + os.sep):
            return None
    return target


def file_problem(p: Path, max_bytes: int) -> str | None:
    """Why a file is left out (unreadable, not a regular file, too large, empty, binary), or None."""
    try:
        st = p.stat()
    except OSError as e:
        return f"{CANNOT_READ} ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block; a device never ends
        return f"not a regular file ({'a FIFO' if stat.S_ISFIFO(st.st_mode) else 'a device or socket'})"
    if st.st_size > max_bytes:
        return f"larger than the {max_bytes // 2**20} MiB limit"
    if st.st_size == 0:
        return "empty file"
    try:
        with open(p, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        return f"{CANNOT_READ} ({e.strerror})"
    if b"%PDF-" in head[:1024] or (head[:2] == b"\x1f\x8b" and p.name.endswith(".gz")):
        return None
    if head[:4] == ZIP_MAGIC:  # a document container, told by its members, or any other zip
        if p.suffix.lower() in DOCUMENT_SUFFIXES or sniff_container(str(p)):
            return None
        return "binary file (a zip archive that is not a document)"
    if head[:8] == OLE2_MAGIC and p.suffix.lower() in (".doc", ".ppt", ".xls"):
        return None  # reading it says to save it in a current format
    if looks_binary(head):
        return "binary file"
    return None


def link_problem(p: Path, roots: list[str], follow_links: bool) -> str | None:
    """Why a symbolic link inside a folder is not taken, or None to take it."""
    if not p.exists():
        try:
            p.stat()
            return BROKEN_LINKS[0]
        except OSError as e:
            return BROKEN_LINKS[1] if e.errno == errno.ELOOP else BROKEN_LINKS[0]
    if p.is_dir():
        return "symbolic link to a folder (not followed)"
    target = None if follow_links else _outside(p, roots)
    if target is not None:
        return f"symbolic link to {target}, outside the folders given (--follow-links takes it)"
    return None


def walk_paths(
    paths: list[str | Path],
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    max_bytes: int = 200 * 1024 * 1024,
    follow_links: bool = False,
) -> tuple[list[Path], list[Skipped]]:
    """Files under the given paths (recursively), skipping hidden, binary, oversized and excluded
    ones. A symbolic link found inside a folder is taken only when it leads to a file inside the
    folders given (or with follow_links): a link to /etc/shadow never lands in an index."""
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    roots = [os.path.realpath(p) for p in paths]

    def consider(p: Path, rel: str, explicit: bool) -> None:
        if os.path.realpath(p) in seen:
            return
        if not explicit and ((include and not _matches(rel, include))
                             or (exclude and _matches(rel, exclude))):
            return
        why = file_problem(p, max_bytes)
        if why:
            skipped.append(Skipped(str(p), why))
            return
        seen.add(os.path.realpath(p))
        files.append(p)

    for given in paths:
        root = Path(given)
        if root.is_file():
            consider(root, root.name, explicit=True)
        elif root.is_dir():
            for folder, dirnames, filenames in _tree(root):
                for fn in filenames:  # symbolic links, to folders too, are listed as files
                    p = folder / fn
                    rel = p.relative_to(root).as_posix()
                    if fn.startswith("."):
                        if not exclude or not _matches(rel, exclude):
                            skipped.append(Skipped(str(p), "hidden file"))
                        continue
                    why = link_problem(p, roots, follow_links) if p.is_symlink() else None
                    if why:
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
