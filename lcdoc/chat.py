"""`lcdoc chat`: a conversation over fixed documents or an index.

Each question is routed on its own (a follow-up may need other passages), and each answer sees
the turns before it: all of them while they fit, the oldest folded into a summary when they do
not (lcdoc.qa.conversation). The documents' state stays resident, in a running server or in this
process, and each turn extends it: the documents, earlier questions and answers are never
prefilled again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

from lcdoc import console
from lcdoc.app.conversations import Thread
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

            with Index.from_settings(thread.index, settings) as idx:
                idx.require_documents()
        self.thread = thread
        self.settings = settings
        self.engine = None

    @property
    def history(self) -> list[tuple[str, str]]:
        return self.thread.turns

    def interrupted(self) -> None:
        """Ctrl-C mid-answer: the cells of the cut answer are trusted no more; the question is
        not part of the conversation."""
        if self.engine is not None:
            self.engine.forget_resident()
        sys.stdout.write("\n")
        console.log("(stopped; the question is not part of the conversation)")

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


def greeting(thread: Thread) -> None:
    if thread.resumed:
        console.log(f"lcdoc chat: conversation {thread.id}, resumed at turn "
                    f"{len(thread.turns) + 1}")
    else:
        console.log(f"lcdoc chat: conversation {thread.id}")
    console.log("ask about the documents; Ctrl-C stops an answer; an empty line, Ctrl-D or "
                "Ctrl-C at the prompt ends")


def questions(interactive: bool, history_db: Path) -> Iterator[str]:
    """Questions typed at a prompt (with line editing; typed questions kept beside the history
    database) or read one per line from a pipe."""
    if not interactive:
        for line in sys.stdin:
            if line.strip():
                yield line.strip()
        return
    save = line_editor(history_db.with_name("chat-questions"))
    try:
        while True:
            try:
                line = input("> ")
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return
            if not line.strip():
                return
            yield line.strip()
    finally:
        if save:
            save()
