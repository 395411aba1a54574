"""Terminal plumbing for the CLI: stderr console, progress bars that vanish when not on a terminal."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

# NO_COLOR (no-color.org): no escape codes at all, bold and dim included, not only no colour.
_PLAIN = bool(os.environ.get("NO_COLOR"))
err = Console(stderr=True, color_system=None if _PLAIN else "auto", highlight=False,
              soft_wrap=True)
out = Console(color_system=None if _PLAIN else "auto", highlight=False, soft_wrap=True)

QUIET = False

# C0 controls, DEL and C1 controls: a file name holding a newline could forge a result line, one
# holding ESC could drive the terminal. Shown as escapes, as ls -b and ripgrep do.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """Text from outside (a file name, a heading) made printable on one line: control
    characters as \\n, \\t, \\xNN."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return _CONTROL.sub(lambda m: named.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def log(msg: str) -> None:
    """A line of progress or information on stderr (silenced by --quiet)."""
    if not QUIET:
        err.print(msg, markup=False, highlight=False)


@contextmanager
def progress_bar() -> Iterator:
    """A callback (stage, done, total[, info]) drawing a rich progress bar on stderr, or a no-op off-terminal."""
    if QUIET or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as prog:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int, info: str = "") -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total if total > 0 else None, info=info)
            prog.update(tasks[stage], completed=done, total=total if total > 0 else None, info=info)

        yield update
