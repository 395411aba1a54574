"""`lcdoc chat`: a conversation over fixed documents or an index.

Each question is routed on its own (a follow-up may need other passages), and each answer sees
the turns before it. The documents' state stays resident, in a running server or in this
process, so a follow-up prefills only the new turn.
"""

from __future__ import annotations

from pathlib import Path

from lcdoc.errors import InputFileError, UsageError
from lcdoc.settings import Settings

# Turns carried into the next prompt: enough for follow-ups, small beside the documents.
MAX_TURNS = 4


class ChatSession:
    """The documents, the conversation so far and, in-process, the engine that keeps them."""

    def __init__(self, paths: list[str], index: str | None, mode: str, settings: Settings) -> None:
        if not paths and index is None:
            raise UsageError("nothing to chat about: give files or --index NAME")
        for p in paths:
            if not Path(p).exists():
                raise InputFileError(p, "no such file or folder")
        self.paths = list(paths)
        self.index = index
        self.mode = mode
        self.settings = settings
        self.history: list[tuple[str, str]] = []
        self.engine = None

    def remember(self, question: str, answer) -> None:
        """Keep the turn for the next prompt, and the engine that answered it in-process."""
        self.history = (self.history + [(question, answer.answer)])[-MAX_TURNS:]
        if getattr(answer, "engine", None) is not None:
            self.engine = answer.engine
            self.engine.keep_resident = True
