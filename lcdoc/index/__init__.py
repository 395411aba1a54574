"""The persistent hybrid index: SQLite + FTS5 for BM25, FAISS for dense vectors, their scores fused."""

from lcdoc.index.build import IndexReport, index_documents, update_index
from lcdoc.index.hybrid import Hit, fuse
from lcdoc.index.index import Index, index_path

__all__ = ["Hit", "Index", "IndexReport", "index_documents", "index_path", "fuse", "update_index"]
