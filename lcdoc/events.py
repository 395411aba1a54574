"""What a long operation reports while it runs, as callbacks: each interface decides what to do
with them (the CLI prints, the server sends them over its socket)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Events:
    """What an operation reports while it runs; each interface decides what to do with it."""

    text: Callable[[str], None] | None = None  # the answer's text, as generated
    route: Callable[[Any], None] | None = None  # the Route chosen (lcdoc.qa.route)
    result: Callable[[Any, bool], None] | None = None  # a document's Summary; reused or not
    failure: Callable[[str, str], None] | None = None  # (path, problem) of a document
    log: Callable[[str], None] | None = None  # a line for the user
    progress: Callable[..., None] | None = None  # (stage, done, total, info)

    def say(self, message: str) -> None:
        if self.log:
            self.log(message)

    def fail(self, path: str, why: str) -> None:
        if self.failure:
            self.failure(path, why)


def debug_mark(phase: str) -> None:
    """With LCDOC_DEBUG set, the wall-clock time a phase ended, on stderr: where a command's
    seconds go, against a timer outside the process."""
    import os

    if os.environ.get("LCDOC_DEBUG"):
        import sys
        import time

        print(f"lcdoc: debug: {phase} at {time.time():.3f}", file=sys.stderr, flush=True)
