"""Reading files into documents and cutting them into cited chunks."""

from lcdoc.ingest.chunking import Chunk, chunk_document
from lcdoc.ingest.document import Document
from lcdoc.ingest.loaders import load_bytes, load_path, load_stdin
from lcdoc.ingest.walk import Skipped, read_documents, walk_paths

__all__ = [
    "Chunk",
    "Document",
    "Skipped",
    "chunk_document",
    "load_bytes",
    "load_path",
    "load_stdin",
    "read_documents",
    "walk_paths",
]
