"""An index folder: SQLite (documents, chunks, FTS5, embeddings) plus a FAISS file derived from it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from lcdoc.errors import IndexMissingError, IndexWriteError, UsageError
from lcdoc.index import vectors
from lcdoc.index.hybrid import Hit, fuse
from lcdoc.index.store import Store

DB_NAME = "index.sqlite"
SearchMode = Literal["hybrid", "bm25", "dense"]


def index_path(name: str, index_dir: Path | None = None, allow_path: bool = True) -> Path:
    """Folder of a named index under the index dir. A path is taken as it is only where the
    library allows it (allow_path): what a user types after --index is always a plain name, so
    no index folder can land outside the index dir."""
    if index_dir is None:
        from lcdoc.settings import default_index_dir

        index_dir = default_index_dir()
    if allow_path and ("/" in name or name.startswith(".")):
        return Path(name)
    if not re.fullmatch(r"\w[\w.-]*", name) or ".." in name:
        raise UsageError(f"index name {name!r}: a name of letters, digits, '.', '_' and '-' "
                         f"(not a path; indexes live in {index_dir})")
    return Path(index_dir) / name


class Index:
    """A persistent hybrid index; open it, update it with `update`, query it with `search`."""

    def __init__(self, folder: Path, store: Store, embed_model: Path | None = None,
                 embed_precision: str | None = None, embed_runtime: str | None = None) -> None:
        self.folder = folder
        self.embed_runtime = embed_runtime  # onnx / torch; None: chosen by machine (embed.get_embedder)
        self.store = store
        self.embed_model = embed_model
        self.new_precision = embed_precision  # for an index with no vectors yet; None: by machine
        self._faiss = None
        self._faiss_gen = -1

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, name: str, index_dir: Path | None = None, create: bool = False,
             embed_model: Path | None = None, allow_path: bool = True,
             embed_precision: str | None = None, embed_runtime: str | None = None) -> "Index":
        """Open an index by name (or path, where allow_path); `create` makes it if absent."""
        from lcdoc.private import private_dir

        folder = index_path(name, index_dir, allow_path)
        db = folder / DB_NAME
        if not db.exists() and not create:
            raise IndexMissingError(f"no such index: {name} (looked in {folder}); "
                                    f"build it with: lcdoc index PATH --index {name}")
        writable = os.access(folder, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))
        if create:
            try:
                private_dir(folder)  # holds copies of the documents: this user's only
            except OSError as e:
                raise IndexWriteError(f"{folder}: cannot create the index folder "
                                      f"({e.strerror})") from e
            if not os.access(folder, os.W_OK):
                raise IndexWriteError(f"{folder}: the folder is read-only; the index can be "
                                      f"searched but not updated there")
            return cls(folder, Store(db, create=True), embed_model, embed_precision, embed_runtime)
        return cls(folder, Store(db, readonly=not writable), embed_model, embed_precision,
                   embed_runtime)

    @classmethod
    def from_settings(cls, name: str, s, create: bool = False) -> "Index":
        """A named index under the settings' index dir, opened with their embedding model,
        precision (for a new index) and runtime; never a path (what follows --index)."""
        return cls.open(name, s.index_dir, create=create, embed_model=s.embed_model,
                        allow_path=False, embed_precision=s.embed_precision,
                        embed_runtime=s.embed_runtime)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.folder.name

    def require_documents(self) -> "Index":
        """This index, or NothingToReadError when it holds no document (nothing to search)."""
        from lcdoc.errors import NothingToReadError

        if not self.store.counts()["documents"]:
            raise NothingToReadError(f"index {self.name} is empty: nothing to read "
                                     f"(lcdoc index PATH --index {self.name} fills it)")
        return self

    # --- vectors ------------------------------------------------------------------------
    def _build_vectors(self):
        n = self.store.counts()["chunks"]
        dim = int(self.store.get_meta("embed_dim") or 384)
        return vectors.build_index(self.store.all_embeddings(), dim, n)

    def _drop_other_vector_files(self, keep: Path) -> None:
        for old in self.folder.glob("vectors.*"):
            if old != keep and old.suffix in (".npy", ".faiss"):
                old.unlink(missing_ok=True)

    def refresh_vectors(self, force: bool = False) -> None:
        """Write the vector file for the current generation and remove stale ones."""
        gen = self.store.generation
        if vectors.existing_file(self.folder, gen) and not force:
            return
        index = self._build_vectors()
        self._faiss, self._faiss_gen = index, gen
        try:
            self._drop_other_vector_files(vectors.save_index(index, self.folder, gen))
        except OSError:
            pass  # a full disk: the next search rebuilds it from SQLite, the source of truth

    def faiss(self):
        """The vector index matching the database; rebuilt from stored embeddings if stale or
        missing (flat: numpy over a memory-mapped file; HNSW: FAISS)."""
        gen = self.store.generation
        if self._faiss is not None and self._faiss_gen == gen:
            return self._faiss
        path = vectors.existing_file(self.folder, gen)
        if path is not None:
            try:
                self._faiss, self._faiss_gen = vectors.load_index(path), gen
                return self._faiss
            except RuntimeError:
                pass  # a torn file (should not happen with atomic rename): rebuild below
        index = self._build_vectors()
        if os.access(self.folder, os.W_OK):
            try:
                vectors.save_index(index, self.folder, gen)
            except OSError:
                pass
        self._faiss, self._faiss_gen = index, gen
        return index

    def vector_kind(self) -> str:
        return vectors.index_kind(self.faiss())

    # --- search -------------------------------------------------------------------------
    def _embed_model(self) -> Path | None:
        stored = self.store.get_meta("embed_model_path")
        return self.embed_model or (Path(stored) if stored and Path(stored).exists() else None)

    def check_embedding_model(self) -> None:
        """The model this run embeds with must be the one the index was built with: another
        model's vectors (even of the same dimension) would rank silently wrong."""
        from lcdoc.index.embed import model_identity, resolve_embedding_model

        built = self.store.get_meta("embed_model")
        if not built:
            return  # empty, or made before the model was recorded
        now = model_identity(resolve_embedding_model(self._embed_model()))
        if now != built:
            raise UsageError(f"index {self.folder} was embedded with {built}; this run embeds with "
                             f"{now}. Use the same embedding model (embed_model setting, "
                             f"LCDOC_EMBED_MODEL) or build another index")

    def embed_precision(self) -> str:
        """The precision this index's vectors were made at, which every later vector must share:
        recorded since ONNX embedding; fp32 (PyTorch) for an older index that has vectors; for
        an empty one, as asked (embed_precision setting), else the machine's default."""
        stored = self.store.get_meta("embed_precision")
        if stored:
            return stored
        if self.store.get_meta("embed_dim"):
            return "fp32"
        return self.new_precision or default_precision()

    def embedder(self, for_indexing: bool = False):
        from lcdoc.index.embed import get_embedder

        self.check_embedding_model()
        model = self._embed_model()
        return get_embedder(str(model) if model else None, self.embed_precision(), for_indexing,
                            self.embed_runtime)

    def search(self, query: str, k: int = 10, mode: SearchMode = "hybrid",
               depth: int | None = None) -> list[Hit]:
        """Best chunks for a query; hybrid fuses BM25 and dense scores (hybrid.fuse)."""
        depth = depth or max(50, 4 * k)
        bm25: list[tuple[int, float]] = []
        dense: list[tuple[int, float]] = []
        if mode in ("hybrid", "bm25"):
            bm25 = self.store.bm25(query, depth)
        if mode in ("hybrid", "dense"):
            index = self.faiss()
            if index.ntotal:
                qv = self.embedder().embed([query])
                dense = vectors.search(index, qv, depth)[0]
        if mode == "bm25":
            fused = bm25
        elif mode == "dense":
            fused = dense
        else:
            fused = fuse(bm25, dense)
        fused = fused[:k]
        b_rank = {i: r for r, (i, _) in enumerate(bm25, 1)}
        d_rank = {i: r for r, (i, _) in enumerate(dense, 1)}
        rows = self.store.chunk_rows([i for i, _ in fused])
        hits = []
        for cid, score in fused:
            if cid not in rows:
                continue  # vector for a chunk deleted since (stale FAISS): skip it
            path, ordinal, heading, text, start, end, ps, pe, ntok, _ = rows[cid]
            hits.append(Hit(cid, path, ordinal, heading, text, start, end, ps, pe, ntok,
                            float(score), b_rank.get(cid), d_rank.get(cid)))
        return hits

    def hits_for_ids(self, ids: list[int]) -> list[Hit]:
        """Hits (score 0) for given chunk ids, in the order given."""
        rows = self.store.chunk_rows(ids)
        return [Hit(i, *rows[i][:9], score=0.0) for i in ids if i in rows]

    def neighbours(self, hit: Hit, radius: int = 1) -> list[Hit]:
        """The hit and its neighbouring chunks in document order (context around a match)."""
        return self.hits_for_ids(self.store.neighbour_ids(hit.chunk_id, radius))

    def dense_vectors(self, texts: list[str]) -> np.ndarray:
        return self.embedder().embed(texts)


def default_precision() -> str:
    """int8 on a machine without a GPU: 2.4x PyTorch's indexing speed where fp32 export gives
    1.4x, and `lcdoc eval retrieval` over 120 queries within two queries of fp32 either way
    (docs/benchmarks.md). fp32 with a GPU, where PyTorch embeds on CUDA."""
    from lcdoc.index.embed import gpu_present

    return "fp32" if gpu_present() else "int8"
