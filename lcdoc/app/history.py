"""The record of every answer (question, answer, sources, documents, timings) and the
conversations they belong to, in one SQLite file under the user's data folder.

Written by every `ask` and `chat` turn, from many processes at once (WAL, a busy timeout), and
never the cause of a failed answer: a write that fails is named in one line and the answer
stands. A damaged file is set aside (renamed, never deleted) and a new one started. `history =
false` in the config, LCDOC_HISTORY=0 or `--no-log` records nothing.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL,
    turn INTEGER NOT NULL,
    time REAL NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    paths TEXT NOT NULL,
    index_name TEXT,
    mode TEXT NOT NULL,
    documents TEXT NOT NULL,
    sources TEXT NOT NULL,
    plan TEXT NOT NULL,
    timings TEXT NOT NULL,
    tokens TEXT NOT NULL,
    UNIQUE (conversation, turn)
);
CREATE INDEX IF NOT EXISTS entries_time ON entries(time);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(
    question, answer, content='entries', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS entries_ai AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts(rowid, question, answer) VALUES (new.id, new.question, new.answer);
END;
CREATE TRIGGER IF NOT EXISTS entries_ad AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, question, answer)
    VALUES ('delete', old.id, old.question, old.answer);
END;
"""


def default_path() -> Path:
    """LCDOC_HISTORY_DB, else history.sqlite in the user's data folder."""
    env = os.environ.get("LCDOC_HISTORY_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lcdoc" / "history.sqlite"


def new_conversation_id() -> str:
    """Eight hex digits: short enough to type after --conversation."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class Entry:
    """One recorded answer."""

    id: int
    conversation: str
    turn: int
    time: float
    question: str
    answer: str
    route: str
    model: str
    paths: list[str]
    index_name: str | None
    mode: str
    documents: list[list[str]]  # [path, sha256] of each document read
    sources: list[dict]
    plan: dict
    timings: dict
    tokens: dict

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


_COLUMNS = ("id, conversation, turn, time, question, answer, route, model, paths, index_name, "
            "mode, documents, sources, plan, timings, tokens")
_NAMES = [c.strip() for c in _COLUMNS.split(",")]
_JSON = {"paths", "documents", "sources", "plan", "timings", "tokens"}


def _entry(row: tuple) -> Entry:
    return Entry(**{n: (json.loads(v) if n in _JSON else v) for n, v in zip(_NAMES, row)})


class History:
    """The history database; open() sets a damaged file aside and starts a new one."""

    def __init__(self, path: Path, log: Callable[[str], None] = lambda m: None) -> None:
        self.path = path
        self.log = log
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        from lcdoc.private import opener, private_dir

        private_dir(self.path.parent)
        if not self.path.exists():
            os.close(opener(str(self.path), os.O_CREAT | os.O_WRONLY))
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.log(f"lcdoc: warning: {self.path}: damaged ({e}); set aside as {aside.name}, "
                     f"a new history started")
            os.close(opener(str(self.path), os.O_CREAT | os.O_WRONLY))
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            db.execute("SELECT COUNT(*) FROM entries").fetchone()
            return db
        except sqlite3.DatabaseError:
            db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # --- writing --------------------------------------------------------------------------
    def record(self, conversation: str, question: str, answer: dict, paths: list[str],
               index_name: str | None, mode: str) -> int:
        """Add one answer (Answer.as_json()) as the next turn of its conversation; its turn."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            turn = self.db.execute("SELECT COALESCE(MAX(turn), 0) + 1 FROM entries WHERE "
                                   "conversation = ?", (conversation,)).fetchone()[0]
            self.db.execute(
                f"INSERT INTO entries({_COLUMNS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (conversation, turn, time.time(), question, answer.get("answer", ""),
                 answer.get("route", ""), answer.get("model", ""), json.dumps(paths), index_name,
                 mode, json.dumps(answer.get("documents", [])),
                 json.dumps(answer.get("sources", [])), json.dumps(answer.get("plan", {})),
                 json.dumps(answer.get("timings", {})), json.dumps(answer.get("tokens", {}))))
        return turn

    def delete(self, key: str) -> int:
        """Delete an entry (its number) or a whole conversation (its id); how many went."""
        with self.db:
            if key.isdigit():
                return self.db.execute("DELETE FROM entries WHERE id = ?", (int(key),)).rowcount
            return self.db.execute("DELETE FROM entries WHERE conversation = ?", (key,)).rowcount

    def delete_all(self) -> int:
        with self.db:
            return self.db.execute("DELETE FROM entries").rowcount

    # --- reading --------------------------------------------------------------------------
    def recent(self, n: int = 20, search: str | None = None,
               conversation: str | None = None) -> list[Entry]:
        """The newest entries first; search is FTS5 over questions and answers (words OR-ed)."""
        if search:
            from lcdoc.index.store import fts_query

            expr = fts_query(search)
            if not expr:
                return []
            rows = self.db.execute(
                f"SELECT {', '.join('e.' + c for c in _NAMES)} FROM "
                f"entries_fts f JOIN entries e ON e.id = f.rowid WHERE entries_fts MATCH ? "
                f"ORDER BY bm25(entries_fts), e.id DESC LIMIT ?", (expr, n)).fetchall()
        elif conversation:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM entries WHERE conversation = ? "
                                   f"ORDER BY turn", (conversation,)).fetchall()
        else:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY id DESC LIMIT ?",
                                   (n,)).fetchall()
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> Entry | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ?",
                              (entry_id,)).fetchone()
        return _entry(row) if row else None

    def last_conversation(self) -> str | None:
        row = self.db.execute("SELECT conversation FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def turns(self, conversation: str) -> list[Entry]:
        return self.recent(conversation=conversation)


def open_history(path: Path | None = None, log: Callable[[str], None] = lambda m: None
                 ) -> History | None:
    """The history, or None (said in one line) when it cannot be opened at all."""
    path = path or default_path()
    try:
        return History(path, log)
    except (OSError, sqlite3.Error) as e:
        log(f"lcdoc: warning: history {path}: cannot be opened ({e}); this answer is not recorded")
        return None
