"""`lcdoc chat`: a conversation over fixed documents or an index.

Each question is routed on its own (a follow-up may need other passages), and each answer sees
the turns before it: all of them while they fit, the oldest folded into a summary when they do
not (lcdoc.conversation). The documents' state stays resident, in a running server or in this
process, and each turn extends it: the documents, earlier questions and answers are never
prefilled again.
"""

from __future__ import annotations

import os
from pathlib import Path

from lcdoc.conversation import Thread
from lcdoc.errors import InputFileError, UsageError
from lcdoc.settings import Settings


class ChatSession:
    """The documents, the conversation so far and, in-process, the engine that keeps them."""

    def __init__(self, thread: Thread, settings: Settings) -> None:
        if not thread.paths and thread.index is None:
            raise UsageError("nothing to chat about: give files or --index NAME")
        for p in thread.paths:
            if not Path(p).exists():
                raise InputFileError(p, "no such file or folder")
        if thread.index is not None and not thread.paths:
            from lcdoc.index import Index

            with Index.open(thread.index, settings.index_dir, allow_path=False) as idx:
                idx.require_documents()
        self.thread = thread
        self.settings = settings
        self.engine = None

    @property
    def history(self) -> list[tuple[str, str]]:
        return self.thread.turns

    def remember(self, answer) -> None:
        """Keep the engine that answered in-process, with its context resident."""
        if getattr(answer, "engine", None) is not None:
            self.engine = answer.engine
            self.engine.keep_resident = True


def line_editor(history_file: Path):
    """Line editing and a history of typed questions (GNU readline, kept 0600 in the user's data
    folder); None where the platform has no readline."""
    try:
        import readline
    except ImportError:
        return None
    from lcdoc.private import private_dir

    try:
        private_dir(history_file.parent)
        readline.read_history_file(history_file)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            readline.write_history_file(history_file)
            os.chmod(history_file, 0o600)
        except OSError:
            pass

    return save
