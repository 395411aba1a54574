"""ask, search and summarize through a running `lcdoc serve`, as the library's own objects.

Each function returns None when there is no server, when it runs another model or plan than
the one asked for, or when it died mid-request: the caller then does the work in-process.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable

from lcdoc import client
from lcdoc.errors import LcdocError
from lcdoc.settings import Settings


class RemoteError(LcdocError):
    """An error the server reported, with the exit code it carries."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _abs(path: str) -> str:
    return path if path == "-" else os.path.abspath(path)


def _settings_payload(s: Settings) -> dict[str, Any]:
    keys = ("index_dir", "embed_model", "answer_tokens", "chunk_tokens", "chunk_overlap",
            "max_file_mb", "model", "ctx", "kv_type", "gpu_layers")
    return {k: (str(Path(v).resolve()) if isinstance(v, Path) else v)
            for k in keys if (v := getattr(s, k)) is not None}


def _call(op: str, payload: dict[str, Any], on_event: Callable[[dict], None],
          log: Callable[[str], None]) -> dict[str, Any] | None:
    """The final event from the server, or None (said in one line) to work in-process."""
    if len(json.dumps(payload)) > client.MAX_REQUEST_BYTES:
        log(f"lcdoc: the request is larger than the server takes "
            f"({client.MAX_REQUEST_BYTES >> 20} MiB); working in-process")
        return None
    try:
        ev = client.request(op, payload, on_event)
    except client.ServerBusy:
        log(f"lcdoc: the server stayed busy for {client.BUSY_RETRY_S:g} s (its queue is full); "
            f"working in-process")
        return None
    except (client.ServerGone, ConnectionError, TimeoutError) as e:
        why = f" ({e})" if str(e) else ""
        log(f"lcdoc: the server went away mid-request{why}; working in-process")
        return None
    except (KeyError, TypeError, ValueError) as e:  # an event missing what its kind carries
        log(f"lcdoc: the server's reply was malformed ({type(e).__name__}: {e}); "
            f"working in-process")
        return None
    if ev is None:
        return None
    if ev["event"] == "mismatch":
        log(f"lcdoc: the running server does not fit this request ({ev.get('reason')}); "
            f"working in-process")
        return None
    if ev["event"] == "error":
        code = ev.get("exit_code")
        raise RemoteError(ev["message"], code if isinstance(code, int) and code > 0 else 1)
    return ev


def _decode(make: Callable[[], Any], log: Callable[[str], None]) -> Any:
    """The library object built from a final event, or None (work in-process) when it is malformed."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log(f"lcdoc: the server's reply was malformed ({type(e).__name__}: {e}); "
            f"working in-process")
        return None


def ask_remote(question: str, paths: list[str], index: str | None, mode: str, settings: Settings,
               on_text: Callable[[str], None] | None = None, on_route: Callable | None = None,
               stdin_data: bytes | None = None, history: list[tuple[str, str]] | None = None,
               log: Callable[[str], None] = lambda m: None):
    """The Answer from a running server, or None (work in-process)."""
    from lcdoc.ask import Answer
    from lcdoc.route import Route

    def on_event(ev: dict) -> None:
        if ev["event"] == "text" and on_text:
            on_text(ev["text"])
        elif ev["event"] == "route" and on_route:
            on_route(Route(ev["route"], 0, None, tuple(ev["reasons"])))

    payload = {"question": question, "paths": [_abs(p) for p in paths], "index": index,
               "mode": mode, "settings": _settings_payload(settings), "stream": on_text is not None,
               "stdin": base64.b64encode(stdin_data).decode() if stdin_data is not None else None,
               "history": [list(h) for h in history or []]}
    ev = _call("ask", payload, on_event, log)
    return _decode(lambda: Answer.from_json(ev["answer"]), log) if ev else None


def search_remote(query: str, index: str, k: int, mode: str, settings: Settings,
                  log: Callable[[str], None] = lambda m: None):
    """Hits from a running server (its embedder is loaded already), or None."""
    from lcdoc.index.hybrid import Hit

    payload = {"query": query, "index": index, "k": k, "mode": mode,
               "settings": _settings_payload(settings)}
    ev = _call("search", payload, lambda e: None, log)
    return _decode(lambda: [Hit.from_json(h) for h in ev["results"]], log) if ev else None


def summarize_remote(paths: list[str], out: Path | None, settings: Settings, options: dict,
                     on_result: Callable, on_failure: Callable, on_level: Callable,
                     on_progress: Callable | None, log: Callable[[str], None] = lambda m: None
                     ) -> dict[str, Any] | None:
    """Run a summarize on the server, calling back per document; its final event, or None."""
    from lcdoc.summarize import Summary

    def on_event(ev: dict) -> None:
        kind = ev["event"]
        if kind == "result":
            on_result(Summary(**ev["summary"]), ev["reused"])
        elif kind == "failure":
            on_failure(ev["path"], ev["reason"])
        elif kind == "log":
            on_level(ev["message"])
        elif kind == "progress" and on_progress:
            on_progress(ev["stage"], ev["done"], ev["total"], ev.get("info", ""))

    payload = {"paths": [_abs(p) for p in paths], "out": os.path.abspath(out) if out else None,
               "settings": _settings_payload(settings), **options}
    return _call("summarize", payload, on_event, log)
