"""Typed requests and the events an operation reports, with their one wire form (JSON).

The CLI builds a request, the server decodes the same type, and both implementations run it.
What a request carries is its dataclass fields, and the settings travel whole (every field of
Settings): nothing is listed by hand on either side, so nothing drifts.
"""

from __future__ import annotations

import base64
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

from lcdoc.errors import UsageError
from lcdoc.events import Events
from lcdoc.settings import Settings, coerce

ASK_MODES = ("auto", "stuff", "rag", "hybrid")
SEARCH_MODES = ("hybrid", "bm25", "dense")
STYLES = ("brief", "detailed", "bullets")
# Settings a running server was started with and cannot change per request: a request that asks
# for other values is answered in-process (RemoteApp says why).
ENGINE_SETTINGS = ("model", "ctx", "kv_type", "gpu_layers")


@dataclass(frozen=True)
class AskRequest:
    """A question about files, stdin and/or an index; one turn of a conversation with history."""

    op: ClassVar[str] = "ask"
    question: str
    paths: tuple[str, ...] = ()
    index: str | None = None
    mode: str = "auto"
    history: tuple[tuple[str, str], ...] = ()
    stdin: bytes | None = None  # '-' in paths: what was read from stdin
    stream: bool = False  # report the answer's text as it is generated
    settings: Settings = field(default_factory=Settings)

    def check(self) -> None:
        _choose("--mode", self.mode, ASK_MODES)
        if not self.question.strip():
            raise UsageError("the question is empty")


@dataclass(frozen=True)
class SearchRequest:
    """The k best passages of an index for a query."""

    op: ClassVar[str] = "search"
    query: str
    index: str
    k: int = 5
    mode: str = "hybrid"
    settings: Settings = field(default_factory=Settings)

    def check(self) -> None:
        _choose("--mode", self.mode, SEARCH_MODES)
        if not 1 <= self.k <= 10_000:
            raise UsageError(f"-k {self.k}: ask for between 1 and 10000 passages")
        if not self.query.strip():
            raise UsageError("the query is empty")


@dataclass(frozen=True)
class SummarizeRequest:
    """One summary per document under the paths (and a digest of them all, when asked)."""

    op: ClassVar[str] = "summarize"
    paths: tuple[str, ...]
    out: str | None = None  # folder for one Markdown file per document and index.md
    style: str = "brief"
    max_words: int = 150
    prompt: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    parallel: int | None = None  # documents side by side; None: the machine's default
    digest: bool = False
    ray: str | None = None  # a Ray cluster's address: the documents go to its workers
    workers: int | None = None
    settings: Settings = field(default_factory=Settings)

    def check(self) -> None:
        _choose("--style", self.style, STYLES)
        for name in ("max_words", "parallel", "workers"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 10_000:
                raise UsageError(f"--{name.replace('_', '-')} {value}: between 1 and 10000")
        if self.digest and self.ray:
            raise UsageError("--digest is not available with --ray: run it again without --ray "
                             "(the summaries are reused)")


@dataclass(frozen=True)
class IndexRequest:
    """Build or update a named index from files and folders (always in this process)."""

    op: ClassVar[str] = "index"
    paths: tuple[str, ...]
    index: str = "default"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_links: bool = False
    ray: str | None = None
    workers: int | None = None
    settings: Settings = field(default_factory=Settings)

    def check(self) -> None:
        if not self.paths:
            raise UsageError("give files or folders to index")


REQUESTS: dict[str, type] = {r.op: r for r in (AskRequest, SearchRequest, SummarizeRequest,
                                                IndexRequest)}
# Operations a running `lcdoc serve` answers; the rest always run in the caller's process.
SERVED = ("ask", "search", "summarize")


def _choose(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{flag} {value}: choose one of {', '.join(allowed)}")


# --- settings on the wire -------------------------------------------------------------------
def settings_to_json(s: Settings) -> dict[str, Any]:
    """Every setting that is set, paths made absolute (the server has its own working folder)."""
    return {f.name: (str(Path(v).resolve()) if isinstance(v, Path) else v)
            for f in fields(Settings) if (v := getattr(s, f.name)) is not None}


def settings_from_json(d: Any) -> Settings:
    """Settings from their wire form; an unknown name or a bad value is a UsageError."""
    if not isinstance(d, dict):
        raise UsageError("request: settings must be an object")
    names = {f.name for f in fields(Settings)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UsageError(f"request: unknown setting {unknown[0]!r}")
    return Settings(**{k: coerce(k, v) for k, v in d.items() if v is not None})


# --- requests on the wire -------------------------------------------------------------------
def to_json(req: Any) -> dict[str, Any]:
    """The request as one JSON object: {"op": ..., field: value, ...}."""
    out: dict[str, Any] = {"op": req.op}
    for f in fields(req):
        out[f.name] = _encode(getattr(req, f.name))
    return out


def _encode(v: Any) -> Any:
    if isinstance(v, Settings):
        return settings_to_json(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, (tuple, list)):
        return [_encode(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def from_json(d: dict[str, Any]) -> Any:
    """The request a JSON object describes, each field checked against its declared type and
    its values as the CLI checks them; UsageError (exit code 2) otherwise."""
    cls = REQUESTS.get(d.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise UsageError(f"unknown request {d.get('op')!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in d.items():
        if key == "op":
            continue
        if key not in known:
            raise UsageError(f"request {cls.op}: unknown field {key!r}")
        values[key] = _decode(raw, hints[key], f"request {cls.op}: {key}")
    for name, f in known.items():
        if name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise UsageError(f"request {cls.op}: {name} is missing")
    req = cls(**values)
    req.check()
    return req


def _decode(raw: Any, hint: Any, where: str) -> Any:
    """raw as the type hint says (str, int, bool, bytes, Settings, X | None, tuple[X, ...],
    tuple[X, Y]), or UsageError naming the field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        return _decode(raw, next(a for a in args if a is not type(None)), where)
    if hint is Settings:
        return settings_from_json(raw)
    if origin is tuple:
        if not isinstance(raw, list):
            raise UsageError(f"{where} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            try:
                return tuple(_decode(x, args[0], where) for x in raw)
            except UsageError:
                kind = "strings" if args[0] is str else "[question, answer] pairs"
                raise UsageError(f"{where} must be a list of {kind}") from None
        if len(raw) != len(args):
            raise UsageError(f"{where} must be a list of {len(args)}")
        return tuple(_decode(x, a, where) for x, a in zip(raw, args))
    if hint is bytes:
        if not isinstance(raw, str):
            raise UsageError(f"{where} must be base64 text")
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError as e:
            raise UsageError(f"{where} is not base64 ({e})") from e
    if hint in (str, int, bool) and isinstance(raw, hint) and \
            (hint is bool or not isinstance(raw, bool)):
        return raw
    raise UsageError(f"{where} must be {getattr(hint, '__name__', hint)}")


# --- events ---------------------------------------------------------------------------------
def sending(send: Callable[..., None], stream: bool = True) -> Events:
    """Events that go over the wire as they happen (the server's side of `receive`)."""
    return Events(
        text=(lambda t: send("text", text=t)) if stream else None,
        route=lambda r: send("route", route=r.route, reasons=list(r.reasons)),
        result=lambda sm, reused: send("result", summary={**sm.as_json(), "levels": sm.levels},
                                       reused=reused),
        failure=lambda p, why: send("failure", path=p, reason=why),
        log=lambda m: send("log", message=m),
        progress=lambda stage, done, total, info="": send(
            "progress", stage=stage, done=done, total=total, info=info))


def receive(ev: dict[str, Any], events: Events) -> None:
    """One event from the wire, handed to the same callback the server's side was given."""
    from lcdoc.qa.route import Route
    from lcdoc.summarize import Summary

    kind = ev["event"]
    if kind == "text" and events.text:
        events.text(ev["text"])
    elif kind == "route" and events.route:
        events.route(Route(ev["route"], 0, None, tuple(ev["reasons"])))
    elif kind == "result" and events.result:
        events.result(Summary(**ev["summary"]), bool(ev["reused"]))
    elif kind == "failure":
        events.fail(ev["path"], ev["reason"])
    elif kind == "log":
        events.say(ev["message"])
    elif kind == "progress" and events.progress:
        events.progress(ev["stage"], ev["done"], ev["total"], ev.get("info", ""))


# --- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    """The passages found, and whether a running server found them."""

    hits: tuple[Any, ...]  # lcdoc.index.Hit
    server: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"results": [h.as_json() for h in self.hits], "server": self.server}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SearchResult":
        from lcdoc.index.hybrid import Hit

        return cls(tuple(Hit.from_json(h) for h in d["results"]), bool(d.get("server")))


@dataclass(frozen=True)
class SummarizeResult:
    """What a summarize run did: summaries made and reused, failures, and the digest if asked."""

    done: tuple[Any, ...]  # lcdoc.summarize.Summary
    reused: tuple[Any, ...]
    failed: tuple[tuple[str, str], ...]
    parallel: int = 1
    digest: str | None = None
    server: bool = False

    @property
    def documents(self) -> list[str]:
        return [s.path for s in self.done + self.reused]

    def as_json(self) -> dict[str, Any]:
        return {"done": [s.as_json() for s in self.done],
                "reused": [s.as_json() for s in self.reused],
                "failed": [list(f) for f in self.failed], "parallel": self.parallel,
                "digest": self.digest, "server": self.server}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SummarizeResult":
        from lcdoc.summarize import Summary

        return cls(tuple(Summary(**s) for s in d["done"]), tuple(Summary(**s) for s in d["reused"]),
                   tuple((str(p), str(r)) for p, r in d["failed"]), int(d.get("parallel", 1)),
                   d.get("digest"), bool(d.get("server")))
