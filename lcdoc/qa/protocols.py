"""What question answering needs of a model and of a searchable index, written down.

lcdoc.engine.llm.Engine is the model; lcdoc.index.Index, an index of files read on the fly and
MergedIndex (both searched as one) are searchable. Anything with these methods works: a test's
small engine, another backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence


class Completion(Protocol):
    text: str
    n_prompt: int
    n_completion: int
    n_cached: int
    prefill_s: float
    generate_s: float


class Model(Protocol):
    """A loaded language model with its plan: what routing, prompting and answering use."""

    path: Path
    arch: Any  # lcdoc.engine.arch.Arch: n_ctx_train, ...
    plan: Any  # lcdoc.engine.plan.Plan
    n_ctx: int
    model_id: str

    @property
    def cache_settings(self) -> str: ...

    def count(self, text: str) -> int: ...

    def chat_parts(self, system: str, context: str, question: str,
                   history: Sequence[tuple[str, str]] = ()) -> tuple[str, str, list[str]]: ...

    def prompt_tokens(self, prefix: str, suffix: str) -> tuple[list[int], list[int]]: ...

    def complete(self, prefix: str, suffix: str, max_tokens: int = 384,
                 stop: list[str] | None = None, on_text: Callable[[str], None] | None = None,
                 cache_prefix: bool = True) -> Completion: ...


class Store(Protocol):
    def document(self, path: str) -> Any: ...


class Searchable(Protocol):
    """An index the retrieving routes search: hits for a query, their neighbours, its documents."""

    @property
    def store(self) -> Store: ...

    def search(self, query: str, k: int = 10) -> list: ...

    def neighbours(self, hit: Any, radius: int = 1) -> list: ...
