"""The application through a running `lcdoc serve`: the same requests, sent over its socket.

Each operation returns None when there is no server, when it runs another model or plan than
the one asked for, when it died mid-request or answered something malformed: the caller then
runs the request in-process (lcdoc.app.run), and `why_not` says why in one line.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from lcdoc.app import client
from lcdoc.app.requests import (AskRequest, Events, SearchRequest, SearchResult,
                                SummarizeRequest, SummarizeResult, receive, to_json)
from lcdoc.errors import LcdocError


class RemoteError(LcdocError):
    """An error the server reported, with the exit code it carries."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RemoteApp:
    """Requests answered by this user's running server, or None (work in-process)."""

    def __init__(self) -> None:
        self.why_not: str | None = None  # why the last request was not answered here

    def ask(self, req: AskRequest, events: Events):
        from lcdoc.qa.answer import Answer

        return self._call(req, events, Answer.from_json)

    def search(self, req: SearchRequest, events: Events) -> SearchResult | None:
        return self._call(req, events, SearchResult.from_json)

    def summarize(self, req: SummarizeRequest, events: Events) -> SummarizeResult | None:
        return self._call(req, events, SummarizeResult.from_json)

    # --- one request ----------------------------------------------------------------------
    def _call(self, req: Any, events: Events, decode: Callable[[dict], Any]) -> Any:
        ev = self._final(to_json(req), events)
        if ev is None:
            return None
        try:
            return decode(ev["result"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return self._decline(events, f"the server's reply was malformed "
                                         f"({type(e).__name__}: {e})")

    def _final(self, payload: dict[str, Any], events: Events) -> dict[str, Any] | None:
        """The final event from the server, or None (said in one line) to work in-process."""
        if len(json.dumps(payload)) > client.MAX_REQUEST_BYTES:
            return self._decline(events, f"the request is larger than the server takes "
                                         f"({client.MAX_REQUEST_BYTES >> 20} MiB)")
        try:
            ev = client.request(payload["op"], {k: v for k, v in payload.items() if k != "op"},
                                lambda e: receive(e, events))
        except client.ServerBusy:
            return self._decline(events, f"the server stayed busy for {client.BUSY_RETRY_S:g} s "
                                         f"(its queue is full)")
        except (client.ServerGone, ConnectionError, TimeoutError) as e:
            return self._decline(events, "the server went away mid-request"
                                         + (f" ({e})" if str(e) else ""))
        except (KeyError, TypeError, ValueError) as e:  # an event missing what its kind carries
            return self._decline(events, f"the server's reply was malformed "
                                         f"({type(e).__name__}: {e})")
        if ev is None:
            return None
        if ev["event"] == "mismatch":
            return self._decline(events, f"the running server does not fit this request "
                                         f"({ev.get('reason')})")
        if ev["event"] == "error":
            code = ev.get("exit_code")
            raise RemoteError(ev["message"], code if isinstance(code, int) and code > 0 else 1)
        return ev

    def _decline(self, events: Events, why: str) -> None:
        self.why_not = why
        events.say(f"lcdoc: {why}; working in-process")
        return None
