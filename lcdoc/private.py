"""Files and folders that hold document text: 0600 and 0700 whatever the umask.

An index, a prompt-cache state or a summary is a copy of a private document (a state's token ids
decode straight back to its text), so nothing lcdoc writes may be readable by other users.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Make a folder (and its missing parents) 0700; one of ours that exists is tightened too.
    A folder that is not ours (or a shared one like /tmp) is never changed."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(p, DIR_MODE)  # mkdir's mode is filtered by the umask
    tighten(path, DIR_MODE)
    return path


def tighten(path: Path, mode: int = FILE_MODE) -> None:
    """Set a file's or folder's mode to `mode` when it is this user's and looser than that."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if st.st_uid == os.getuid() and st.st_mode & 0o777 & ~mode:
            os.chmod(path, mode, follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass  # a read-only medium: nothing we write goes there


def opener(path: str, flags: int) -> int:
    """For open(..., opener=opener): a new file is created 0600 and stays so."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        pass
    return fd


def write_private(path: Path, data: bytes | str, encoding: str = "utf-8",
                  errors: str = "strict") -> None:
    """Write a whole file, 0600, atomically (a temporary file renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    raw = data.encode(encoding, errors) if isinstance(data, str) else data
    with open(tmp, "wb", opener=opener) as f:
        f.write(raw)
    os.replace(tmp, path)
