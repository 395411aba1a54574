"""Conversations that last: the thread an answer belongs to, continued from the history, and
each answer recorded in it (lcdoc.app.history)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

from lcdoc.app.history import History, new_conversation_id, open_history
from lcdoc.errors import UsageError
from lcdoc.qa.conversation import Turn
from lcdoc.settings import Settings


@dataclass
class Thread:
    """A conversation being continued or started: its id, its turns so far, and what it is about."""

    id: str
    turns: list[Turn]
    paths: list[str]
    index: str | None
    mode: str
    resumed: bool = False


def open_thread(history, continue_id: str | None, paths: list[str], index: str | None,
                mode: str) -> Thread:
    """The conversation to continue ("last" for the newest, or an id), or a new one. A continued
    conversation keeps its documents and index when none are given now. `history` is a
    lcdoc.app.history.History, or None when nothing is recorded (then nothing can be continued)."""
    if continue_id is None:
        return Thread(new_conversation_id(), [], list(paths), index, mode)
    if history is None:
        raise UsageError("nothing to continue: the history is off (history = false, "
                         "LCDOC_HISTORY=0 or --no-log)")
    cid = history.last_conversation() if continue_id == "last" else continue_id
    entries = history.turns(cid) if cid else []
    if not entries:
        raise UsageError("no conversation to continue yet" if continue_id == "last" else
                         f"no conversation {continue_id!r} in the history (lcdoc log lists them)")
    last = entries[-1]
    return Thread(cid, [(e.question, e.answer) for e in entries],
                  list(paths) or list(last.paths), index or last.index_name,
                  mode if mode != "auto" else last.mode, resumed=True)


def start(s: Settings, continue_id: str | None, no_log: bool, paths: list[str],
          index: str | None, mode: str, log: Callable[[str], None]
          ) -> tuple[History | None, Thread]:
    """(the history, or None when nothing is recorded; the conversation this answer belongs to)."""
    hist = None if no_log or not s.history else open_history(log=log)
    return hist, open_thread(hist, continue_id,
                             [p if p == "-" else os.path.abspath(p) for p in paths], index, mode)


def record(hist: History | None, thread: Thread, question: str, ans, log: Callable[[str], None]):
    """The answer with its conversation and turn, recorded in the history (a failure to record
    is a warning, never a failed answer)."""
    turn = len(thread.turns) + 1
    if hist is not None:
        try:
            turn = hist.record(thread.id, question, ans.as_json(),
                               [p for p in thread.paths if p != "-"], thread.index, thread.mode)
        except Exception as e:  # a locked, full or read-only disk: the answer stands
            log(f"lcdoc: warning: the history did not record this answer ({e})")
    thread.turns.append((question, ans.answer))
    return dataclasses.replace(ans, conversation=thread.id, turn=turn)
