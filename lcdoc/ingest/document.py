"""A loaded document: its text, where each page starts, and the hash that keys it."""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    """Text of one file; `page_starts[i]` is the character offset where page i+1 begins (PDF only)."""

    path: str
    text: str
    kind: str  # pdf, markdown, rst, html, text
    sha256: str
    page_starts: tuple[int, ...] = ()
    # (offset, level, title) from the file's own outline (PDF bookmarks): better headings than
    # any guess from the lines, used by the chunker when present
    outline: tuple[tuple[int, int, str], ...] = ()

    @property
    def n_pages(self) -> int:
        return len(self.page_starts)

    def page_at(self, offset: int) -> int | None:
        """1-based page holding a character offset, or None for unpaged documents."""
        if not self.page_starts:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))

    def page_text(self, page: int) -> str:
        """The text of one 1-based page."""
        start = self.page_starts[page - 1]
        end = self.page_starts[page] if page < len(self.page_starts) else len(self.text)
        return self.text[start:end]
