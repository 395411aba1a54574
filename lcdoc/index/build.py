"""Incremental indexing: read new or changed files, chunk, embed, commit in small atomic batches."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from lcdoc.errors import InputFileError, UsageError
from lcdoc.index.index import Index
from lcdoc.index.lock import WriteLock
from lcdoc.ingest import Chunk, Document, Skipped, chunk_document, load_path, walk_paths
from lcdoc.ingest.chunking import CHUNKER_VERSION

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Commit after about this many chunks: a kill loses at most one batch of embedding work, and
# each commit is a single transaction, so the index is always whole.
COMMIT_CHUNKS = 512


@dataclass
class IndexReport:
    """What one `lcdoc index` run did, for the summary line and --json."""

    index: str
    files_seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    pages: int = 0
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    failed: list[Skipped] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    kept: list[Skipped] = field(default_factory=list)  # missing roots whose documents were kept
    removed_paths: list[str] = field(default_factory=list)
    vector_index: str = ""
    interrupted: bool = False

    @property
    def faults(self) -> list[Skipped]:
        """Files that were meant to be read and were not: failed, unreadable, broken links."""
        return self.failed + [s for s in self.skipped if s.fault]

    @property
    def ok(self) -> bool:
        """False when nothing could be read: no document indexed, none already there, none
        removed (an empty folder, or only unreadable files)."""
        return self.indexed + self.unchanged + self.removed > 0


def doc_key(path: Path | str) -> str:
    """The stored name of a file: its resolved path, with bytes that are not UTF-8 (a file name
    from another locale) written as \\xNN escapes, since SQLite stores UTF-8 text only."""
    resolved = os.path.realpath(path)  # never raises, even inside a symlink loop
    try:
        resolved.encode("utf-8")
        return resolved
    except UnicodeEncodeError:
        return os.fsencode(resolved).decode("utf-8", "backslashreplace")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime (ns)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _reread_if_changed(path: Path, before: os.stat_result | None, result):
    """(result, stat) where the file is the one that was read: a file replaced or rewritten
    while it was read is read once more; changing again, it is named and left for the next run
    (its old text must never be stored under the new file's stat)."""
    after = _stat_or_none(path)
    if before is not None and after is not None and file_identity(before) == file_identity(after):
        return result, before
    before = after
    try:
        result = load_path(path)
    except InputFileError as e:
        return e, before
    after = _stat_or_none(path)
    if before is None or after is None or file_identity(before) != file_identity(after):
        return InputFileError(str(path), "changed while it was being read; run lcdoc index "
                                         "again when it is written"), before
    return result, before


def _same_stat(old, path: Path) -> bool:
    """Same size and modification time as when it was indexed: unchanged without reading it
    (as rsync and make judge). A file rewritten within the same mtime tick and size is the rare
    miss; a changed size or mtime falls back to comparing the content's hash."""
    st = path.stat()
    return st.st_size == old.size and st.st_mtime == old.mtime


# A PDF larger than its fair share of the work (and than this) is split into page ranges, so one
# 2,000-page manual uses every core; each range re-opens the file (0.27 s for Valgrind's 397-page
# manual against 20 s of extraction), so ranges are at least MIN_PAGES long.
SPLIT_MIN_BYTES = 256 << 10
MIN_PAGES = 32


def _page_ranges(path: Path, workers: int) -> list[tuple[int, int]] | None:
    """Page ranges to extract in parallel, or None to read the PDF in one piece."""
    from lcdoc.ingest.loaders import pdf_page_count

    try:
        n = pdf_page_count(path)
    except InputFileError:
        return None  # reading it whole reports the error the usual way
    parts = min(2 * workers, n // MIN_PAGES)
    if parts < 2:
        return None
    step = -(-n // parts)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def load_all(paths: list[Path], workers: int) -> Iterator[tuple[Path, Document | InputFileError]]:
    """Read documents, PDFs in parallel processes (pypdf is pure Python and CPU-bound)."""
    from lcdoc.ingest.loaders import pdf_document, pdf_outline_of, pdf_page_range

    is_pdf = [p.name.lower().endswith((".pdf", ".pdf.gz")) for p in paths]
    pdfs = [p for p, pdf in zip(paths, is_pdf) if pdf]
    others = [p for p, pdf in zip(paths, is_pdf) if not pdf]
    if workers < 2 or not pdfs:
        pdfs, others = [], others + pdfs
    sizes = {}
    for p in pdfs:
        try:
            sizes[p] = p.stat().st_size
        except OSError:
            sizes[p] = 0
    share = sum(sizes.values()) / max(1, workers)
    plan = [(p, _page_ranges(p, workers) if sizes[p] >= SPLIT_MIN_BYTES and sizes[p] > share
             else None) for p in pdfs]
    tasks = sum(len(r) if r else 1 for _, r in plan)
    if tasks < 2:  # one small PDF: a process pool would cost more than it saves
        others, plan = others + pdfs, []
    pool = None
    jobs: list[tuple[Path, list]] = []
    if plan:
        # spawn, not fork: the parent may already hold torch's threads.
        pool = ProcessPoolExecutor(max_workers=min(workers, tasks),
                                   mp_context=multiprocessing.get_context("spawn"))
        for p, ranges in plan:
            if ranges:
                sha = _sha256(p)  # keys the OCR cache as a whole-file read does
                jobs.append((p, [pool.submit(pdf_page_range, p, lo, hi, sha) for lo, hi in ranges]))
            else:
                jobs.append((p, [pool.submit(load_path, p)]))
    try:
        for p in others:
            try:
                yield p, load_path(p)
            except InputFileError as e:
                yield p, e
        for p, futs in jobs:
            try:
                if len(futs) == 1:
                    yield p, futs[0].result()
                else:
                    pages = [page for f in futs for page in f.result()]
                    yield p, pdf_document(str(p), _sha256(p), pages, pdf_outline_of(p))
            except InputFileError as e:
                yield p, e
            except Exception as e:  # a crash inside the parser names the file, never stops the run
                yield p, InputFileError(str(p), f"could not be read ({type(e).__name__}: {e})")
    finally:
        if pool:
            # An interrupted run must not wait for extractions nobody will read.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)


def _confirmed_gone(existing: dict, paths: list, files: list[Path], skipped: list[Skipped],
                    report: "IndexReport") -> list[str]:
    """Stored documents to drop: only those under a root that exists now and that are
    themselves gone. A root that is missing (an unmounted drive, a renamed folder, a typo) keeps
    every document under it, and is reported."""
    roots = [Path(p).resolve() for p in paths]
    present = {doc_key(f) for f in files} | {doc_key(x.path) for x in skipped}
    gone = []
    for stored in existing:
        under = [r for r in roots if Path(stored) == r or r in Path(stored).parents]
        if not under or stored in present or os.path.lexists(stored):
            continue
        if all(r.exists() for r in under):
            gone.append(stored)
    for r in roots:
        if not r.exists():
            kept = sum(1 for d in existing if Path(d) == r or r in Path(d).parents)
            if kept:
                report.kept.append(Skipped(str(r), f"not found: its {kept} indexed document(s) "
                                                   f"are kept"))
    return gone


class _Cancelled(Exception):
    """Raised inside the embedding thread once the run is abandoned."""


class _Batches:
    """Read documents' chunks, embedded on a worker thread while the next files are read and
    chunked (ONNX Runtime and PyTorch release the GIL), then committed in order from the
    caller's thread (the SQLite connection's) — each batch one transaction."""

    def __init__(self, index: Index, report: IndexReport, chunking: str,
                 on_progress: Progress | None, gone: list[str], embed_with=None,
                 for_indexing: bool = True) -> None:
        self.index, self.report, self.chunking, self.on_progress = index, report, chunking, on_progress
        self.embed_with = embed_with  # Index -> an embedder (a Ray pool); None: in this process
        self.gone = gone  # removed with the first commit
        self.pending: list[tuple[Document, float, int, list[Chunk]]] = []
        self.n_pending = 0
        self.inflight: deque[tuple[list, Future]] = deque()
        self.embedder = None
        self.identity: dict[str, str] = {}  # written with the first chunks, in their transaction
        self.embedded = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lcdoc-embed")
        self.for_indexing = for_indexing  # False: a few chunks, where PyTorch's start would dominate
        self.cancelled = False

    def add(self, item: tuple[Document, float, int, list[Chunk]], batch_chunks: int) -> None:
        self.pending.append(item)
        self.n_pending += len(item[3])
        if self.n_pending >= batch_chunks:
            self._submit()
        while self.inflight and (len(self.inflight) > 1 or self.inflight[0][1].done()):
            self._write_oldest()

    def _start_embedder(self) -> None:
        store = self.index.store
        self.embedder = emb = (self.embed_with(self.index) if self.embed_with
                               else self.index.embedder(for_indexing=self.for_indexing))
        dim = store.get_meta("embed_dim")
        if dim and int(dim) != emb.dim:
            raise UsageError(f"{self.index.folder}: built with {dim}-d embeddings, the model "
                             f"gives {emb.dim}-d; use another index name")
        self.identity.update(embed_dim=str(emb.dim), embed_model=emb.name,
                             embed_precision=emb.precision, chunking=self.chunking)
        if self.index.embed_model:
            self.identity["embed_model_path"] = str(self.index.embed_model)

    def _tick(self, n: int) -> None:
        if self.cancelled:  # abandon(): stop at the next batch rather than embed the rest
            raise _Cancelled()
        self.embedded += n
        if self.on_progress:  # the total is what has been read so far: final once reading ends
            self.on_progress("embedding", self.embedded, max(self.report.chunks, self.embedded))

    def _submit(self) -> None:
        if not self.pending:
            return
        if self.embedder is None:
            self._start_embedder()
        texts = [c.indexed_text() for _, _, _, cs in self.pending for c in cs]
        self.inflight.append((self.pending, self.pool.submit(self.embedder.embed, texts, self._tick)))
        self.pending, self.n_pending = [], 0

    def _write_oldest(self) -> None:
        batch, fut = self.inflight.popleft()
        vecs = fut.result()
        items, pos = [], 0
        for doc, mtime, size, cs in batch:
            items.append((doc, mtime, size, cs, vecs[pos : pos + len(cs)]))
            pos += len(cs)
        self._write(items)

    def _write(self, items: list) -> None:
        self.index.store.replace_documents(items, remove_paths=self.gone,
                                           meta=self.identity if items else None)
        self.report.removed += len(self.gone)
        self.report.removed_paths += self.gone
        self.gone = []

    def finish(self) -> None:
        """Embed what is left and commit every batch; then removals if nothing was written."""
        self._submit()
        while self.inflight:
            self._write_oldest()
        if self.gone:
            self._write([])
        self.pool.shutdown()

    def abandon(self) -> None:
        """Drop what is not committed and stop the embedding thread within one batch (Ctrl-C
        on one large document must not leave minutes of embedding running)."""
        self.cancelled = True
        self.pending.clear()
        for _, fut in self.inflight:
            fut.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _changed(store, files: list[Path], existing: dict, rechunk: bool,
             report: IndexReport) -> list[Path]:
    """The files to read: new or changed ones (all of them when the chunking changed). A file
    touched but not changed (same hash) only has its new stat remembered."""
    todo: list[Path] = []
    for f in files:
        old = existing.get(doc_key(f))
        try:
            same = old is not None and not rechunk and _same_stat(old, f)
            if old is not None and not rechunk and not same and old.sha256 == _sha256(f):
                st = f.stat()
                store.set_stat(old.path, st.st_size, st.st_mtime)
                same = True
        except OSError:
            same = False  # unreadable now: reading it reports why
        if same:
            report.unchanged += 1
        else:
            todo.append(f)
    return todo


def _chunked(path: Path, result, chunk_tokens: int, chunk_overlap: int, report: IndexReport
             ) -> tuple[Document | None, list[Chunk]]:
    """The document read and its chunks, or (None, []) with the failure named in the report
    (one file's failure never stops the others)."""
    if isinstance(result, InputFileError):
        report.failed.append(Skipped(str(path), result.problem))
        return None, []
    try:
        doc = Document(doc_key(path), result.text, result.kind, result.sha256,
                       result.page_starts, result.outline)
        chunks = chunk_document(doc, chunk_tokens, chunk_overlap)
    except Exception as e:
        report.failed.append(Skipped(str(path), f"could not be indexed ({type(e).__name__}: {e})"))
        return None, []
    if not chunks:
        report.failed.append(Skipped(str(path), "no text to index"))
        return None, []
    return doc, chunks


def update_index(
    index: Index,
    paths: list[str | Path],
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    max_bytes: int = 200 * 2**20,
    chunk_tokens: int = 256,
    chunk_overlap: int = 32,
    workers: int | None = None,
    on_progress: Progress | None = None,
    lock_wait_s: float = 10.0,
    commit_chunks: int = COMMIT_CHUNKS,
    embed_with=None,
    follow_links: bool = False,
) -> IndexReport:
    """Bring the index up to date with the given files and folders; returns what was done.
    embed_with(index) gives the embedder to use instead of this process's (a Ray pool);
    follow_links takes symbolic links that lead outside the folders given."""
    t0 = time.perf_counter()
    report = IndexReport(index=index.name)
    store = index.store
    workers = workers or os.cpu_count() or 1
    with WriteLock(index.folder, lock_wait_s):
        files, skipped = walk_paths(paths, include, exclude, max_bytes, follow_links)
        report.skipped = skipped
        report.files_seen = len(files) + len(skipped)
        existing = {d.path: d for d in store.documents()}
        chunking = f"v{CHUNKER_VERSION}:{chunk_tokens}/{chunk_overlap}"
        rechunk = store.get_meta("chunking") not in (None, chunking)

        todo = _changed(store, files, existing, rechunk, report)
        gone = _confirmed_gone(existing, paths, files, skipped, report)

        index.check_embedding_model()  # before any work: another model's vectors never mix in
        batches = _Batches(index, report, chunking, on_progress, gone, embed_with)
        try:
            stats = {p: _stat_or_none(p) for p in todo}  # before a byte is read
            for i, (path, result) in enumerate(load_all(todo, workers), 1):
                if on_progress:
                    on_progress("reading", i, len(todo))
                result, st = _reread_if_changed(path, stats.pop(path), result)
                doc, chunks = _chunked(path, result, chunk_tokens, chunk_overlap, report)
                if doc is None:
                    continue
                batches.add((doc, st.st_mtime, st.st_size, chunks), commit_chunks)
                report.indexed += 1
                report.pages += doc.n_pages
                report.chunks += len(chunks)
                report.tokens += sum(c.n_tokens for c in chunks)
            batches.finish()
        except BaseException as e:
            report.interrupted = isinstance(e, KeyboardInterrupt)
            batches.abandon()  # uncommitted work is dropped; what was committed stays
            raise
        finally:
            index.refresh_vectors()
            report.vector_index = index.vector_kind()
            report.seconds = time.perf_counter() - t0
    return report


SMALL_TEXT_CHARS = 500_000  # ~500 chunks of 256 word pieces


def index_documents(index: Index, docs: list[Document], chunk_tokens: int = 256,
                    chunk_overlap: int = 32, lock_wait_s: float = 10.0) -> IndexReport:
    """Documents already read (files named on the command line, stdin) into an index, each
    replacing an earlier version; nothing is read again, so a piped PDF keeps its pages. A file
    is stored under its resolved path, stdin under its own name."""
    t0 = time.perf_counter()
    report = IndexReport(index=index.name)
    store = index.store
    with WriteLock(index.folder, lock_wait_s):
        existing = {d.path: d for d in store.documents()}
        chunking = f"v{CHUNKER_VERSION}:{chunk_tokens}/{chunk_overlap}"
        rechunk = store.get_meta("chunking") not in (None, chunking)
        index.check_embedding_model()
        # On a GPU host, fp32 indexing would start PyTorch on CUDA: ~5 s before the first vector
        # (`lcdoc ask --mode rag` over a 5-line file: retrieve 4.9 s on the H100). Text of fewer
        # than ~500 chunks embeds sooner on the CPU export (the same vectors within float noise).
        batches = _Batches(index, report, chunking, None, [],
                           for_indexing=sum(len(d.text) for d in docs) >= SMALL_TEXT_CHARS)
        try:
            for doc in docs:
                key = doc_key(doc.path) if os.path.isfile(doc.path) else doc.path
                old = existing.get(key)
                if old is not None and not rechunk and old.sha256 == doc.sha256:
                    report.unchanged += 1
                    continue
                d = Document(key, doc.text, doc.kind, doc.sha256, doc.page_starts, doc.outline)
                chunks = chunk_document(d, chunk_tokens, chunk_overlap)
                if not chunks:
                    report.failed.append(Skipped(doc.path, "no text to index"))
                    continue
                batches.add((d, 0.0, len(d.text), chunks), COMMIT_CHUNKS)
                report.indexed += 1
                report.chunks += len(chunks)
            batches.finish()
        except BaseException:
            batches.abandon()
            raise
        finally:
            index.refresh_vectors()
            report.seconds = time.perf_counter() - t0
    return report
