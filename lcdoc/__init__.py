"""lcdoc: long documents, local models, stuffing or retrieval chosen per query."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Index", "update_index", "ask", "__version__"]


def __getattr__(name: str):
    # Heavy modules load on first use so `lcdoc --help` stays fast.
    if name in ("Index", "update_index"):
        from lcdoc import index

        return getattr(index, name)
    if name == "ask":
        from lcdoc.qa.ask import ask

        return ask
    raise AttributeError(name)
