"""The SQLite side of an index: documents, chunks, their embeddings, and an FTS5 table for BM25.

SQLite is the source of truth. Each write is one transaction that also bumps `generation`, so an
index killed at any point reopens at its previous or its new state; the FAISS file is derived from
the stored embeddings and stamped with the generation it was built from.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lcdoc.ingest.chunking import Chunk
from lcdoc.ingest.document import Document

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    n_pages INTEGER NOT NULL,
    page_starts TEXT NOT NULL,
    text TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    page_start INTEGER,
    page_end INTEGER,
    n_tokens INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    heading, text, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, heading, text)
    VALUES ('delete', old.id, old.heading, old.text);
END;
"""

# Words too common to help BM25; dropping them keeps OR-queries fast on large indexes.
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in into is it its of on or "
    "that the their there this to was what when where which who why will with you your".split()
)


@dataclass(frozen=True)
class DocumentRow:
    """A stored document's identity, as incremental indexing needs it."""

    id: int
    path: str
    sha256: str
    kind: str
    n_pages: int
    n_chunks: int
    size: int = -1
    mtime: float = -1.0


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression from free text: each word quoted, OR-ed, so punctuation is harmless."""
    words = [w for w in re.findall(r"\w+", query.lower()) if w not in STOPWORDS]
    if not words:
        words = re.findall(r"\w+", query.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def _write_error(path: Path, e: Exception) -> Exception:
    """SQLite's own words turned into what the user must do about them."""
    from lcdoc.errors import IndexWriteError

    import errno

    msg = str(e)
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        msg = "attempt to write a readonly database"
    if "full" in msg or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
        return IndexWriteError(f"{path.parent}: the disk is full ({msg}); the index keeps every "
                               f"batch committed before it")
    if "readonly" in msg.replace("-", "").replace(" ", "") or "unable to open" in msg:
        return IndexWriteError(f"{path.parent}: the folder is read-only ({msg}); the index can "
                               f"be searched but not updated there")
    return e


def _blank(path: Path) -> bool:
    """An empty file, or a database with no tables: never an index, safe to make one over."""
    if path.stat().st_size == 0:
        return True
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


def _create(path: Path) -> None:
    """A new, empty index database, made whole under a temporary name and renamed into place:
    a kill or a full disk during creation never leaves a half-made index.sqlite."""
    from lcdoc.private import opener

    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        os.close(opener(str(tmp), os.O_CREAT | os.O_WRONLY | os.O_TRUNC))
        db = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                           [("schema_version", str(SCHEMA_VERSION)), ("generation", "0")])
        finally:
            db.close()
        os.replace(tmp, path)
    except (sqlite3.Error, OSError) as e:
        raise _write_error(path, e) from e
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


class Store:
    """One index's SQLite file.

    Opened read-only where the medium is (SQLite's immutable mode: a read-only mount has no room
    for the WAL's shared-memory file); created only with `create`, as 0600, and a file with no
    schema (a creation that a full disk stopped) is never taken for an index.
    """

    def __init__(self, path: Path, readonly: bool = False, create: bool = False) -> None:
        from lcdoc.errors import IndexMissingError
        from lcdoc.private import tighten

        self.path = path
        if not path.exists() or _blank(path):
            if not create:
                raise IndexMissingError(f"no such index: {path.parent} holds no finished index "
                                        f"(an empty {path.name})")
            _create(path)  # an empty database is what a full disk left an earlier version
        if readonly:
            immutable = "&immutable=1" if not os.access(path.parent, os.W_OK) else ""
            self.db = sqlite3.connect(f"file:{path}?mode=ro{immutable}", uri=True, timeout=30.0,
                                      isolation_level=None)
        else:
            tighten(path)  # SQLite gives its -wal and -shm files the database file's mode
            try:
                self.db = sqlite3.connect(f"file:{path}", uri=True, timeout=30.0,
                                          isolation_level=None)
                self.db.execute("PRAGMA journal_mode = WAL")  # readers go on during a write
                self.db.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as e:
                raise _write_error(path, e) from e
        self.db.execute("PRAGMA foreign_keys = ON")
        if not self._has_schema():
            self.db.close()
            raise IndexMissingError(f"no such index: {path.parent} holds no finished index "
                                    f"(an empty or damaged {path.name})")

    def _has_schema(self) -> bool:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError:
            return False  # no meta table, or not a database at all
        return row is not None

    def close(self) -> None:
        self.db.close()

    # --- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # --- writes (each call is one atomic transaction) -----------------------------------
    def set_stat(self, path: str, size: int, mtime: float) -> None:
        """Record a file's new size and mtime when its content was found unchanged (touched)."""
        try:
            with self.db:
                self.db.execute("UPDATE documents SET size = ?, mtime = ? WHERE path = ?",
                                (size, mtime, path))
        except sqlite3.Error as e:
            raise _write_error(self.path, e) from e

    def replace_documents(
        self,
        items: Iterable[tuple[Document, float, int, list[Chunk], np.ndarray]],
        remove_paths: Iterable[str] = (),
        meta: dict[str, str] | None = None,
    ) -> int:
        """Insert or replace documents with their chunks and embeddings, and the index's identity
        (meta: chunker, embedding model and dimension) in the same transaction, so chunks and
        the description of how they were made can never disagree; returns the new generation."""
        import time

        cur = self.db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            for path in remove_paths:
                cur.execute("DELETE FROM documents WHERE path = ?", (path,))
            for doc, mtime, size, chunks, vecs in items:
                cur.execute("DELETE FROM documents WHERE path = ?", (doc.path,))
                cur.execute(
                    "INSERT INTO documents(path, sha256, kind, n_pages, page_starts, text, size, mtime,"
                    " indexed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (doc.path, doc.sha256, doc.kind, doc.n_pages, json.dumps(doc.page_starts),
                     doc.text, size, mtime, time.time()),
                )
                doc_id = cur.lastrowid
                vecs = np.ascontiguousarray(vecs, dtype=np.float32)
                cur.executemany(
                    "INSERT INTO chunks(doc_id, ordinal, heading, text, start, end, page_start,"
                    " page_end, n_tokens, embedding) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [
                        (doc_id, c.ordinal, c.heading, c.text, c.start, c.end, c.page_start,
                         c.page_end, c.n_tokens, vecs[i].tobytes())
                        for i, c in enumerate(chunks)
                    ],
                )
            for key, value in (meta or {}).items():
                self.set_meta(key, value)
            gen = self.generation + 1
            self.set_meta("generation", str(gen))
            cur.execute("COMMIT")
            return gen
        except BaseException as e:
            if self.db.in_transaction:  # SQLite rolls back by itself on a full disk
                cur.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise _write_error(self.path, e) from e
            raise

    # --- reads --------------------------------------------------------------------------
    def documents(self) -> list[DocumentRow]:
        rows = self.db.execute(
            "SELECT d.id, d.path, d.sha256, d.kind, d.n_pages, COUNT(c.id), d.size, d.mtime"
            " FROM documents d"
            " LEFT JOIN chunks c ON c.doc_id = d.id GROUP BY d.id ORDER BY d.path"
        ).fetchall()
        return [DocumentRow(*r) for r in rows]

    def document(self, path: str) -> Document | None:
        row = self.db.execute(
            "SELECT path, text, kind, sha256, page_starts FROM documents WHERE path = ?", (path,)
        ).fetchone()
        if not row:
            return None
        return Document(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])))

    def counts(self) -> dict[str, int]:
        d, p, c, t = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM documents), (SELECT COALESCE(SUM(n_pages),0) FROM documents),"
            " COUNT(*), COALESCE(SUM(n_tokens),0) FROM chunks"
        ).fetchone()
        return {"documents": d, "pages": p, "chunks": c, "tokens": t}

    def all_embeddings(self, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches, to rebuild the FAISS index without holding two copies."""
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT id, embedding FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            yield ids, vecs
            last = int(ids[-1])

    def bm25(self, query: str, limit: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score: higher is better) for the best lexical matches."""
        expr = fts_query(query)
        if not expr:
            return []
        rows = self.db.execute(
            "SELECT rowid, bm25(chunks_fts, 0.5, 1.0) AS s FROM chunks_fts WHERE chunks_fts MATCH ?"
            " ORDER BY s LIMIT ?",
            (expr, limit),
        ).fetchall()
        return [(r[0], -r[1]) for r in rows]

    def chunk_rows(self, ids: list[int]) -> dict[int, tuple]:
        """id -> (path, ordinal, heading, text, start, end, page_start, page_end, n_tokens, doc_id)."""
        if not ids:
            return {}
        out = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            for r in self.db.execute(
                "SELECT c.id, d.path, c.ordinal, c.heading, c.text, c.start, c.end, c.page_start,"
                f" c.page_end, c.n_tokens, c.doc_id FROM chunks c JOIN documents d ON d.id = c.doc_id"
                f" WHERE c.id IN ({q})",
                part,
            ):
                out[r[0]] = r[1:]
        return out

    def neighbour_ids(self, chunk_id: int, radius: int) -> list[int]:
        """Ids of the chunks within `radius` positions of one chunk in its document, in order."""
        row = self.db.execute("SELECT doc_id, ordinal FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        if not row:
            return []
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM chunks WHERE doc_id = ? AND ordinal BETWEEN ? AND ? ORDER BY ordinal",
                (row[0], row[1] - radius, row[1] + radius),
            )
        ]
