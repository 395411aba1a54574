"""Talk to a running `lcdoc serve` over its Unix socket; None means "no server: work in-process".

Imports only the standard library, so a command answered by the server starts in milliseconds.
The wire format is one JSON object per line: a request, then events until a final one.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator

FINAL = ("ask", "search", "summarize", "error", "mismatch", "pong")  # an op's result is named for it


def socket_path() -> Path:
    """LCDOC_SOCKET, else a socket in the user's runtime folder (or ~/.cache/lcdoc)."""
    env = os.environ.get("LCDOC_SOCKET")
    if env:
        return Path(env).expanduser()
    return own_socket_folder() / "serve.sock"


def own_socket_folder() -> Path:
    """lcdoc's own folder for its socket, which `lcdoc serve` may create and make 0700."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "lcdoc"


def server_disabled() -> bool:
    return os.environ.get("LCDOC_NO_SERVER", "") not in ("", "0")


class ServerGone(Exception):
    """The server closed the connection before its final event (it died or was killed), or
    answered something that is not its protocol: the caller works in-process."""


class ServerBusy(Exception):
    """The server's queue stayed full for the whole retry window."""


# The longest request line the server takes (lcdoc.serve.MAX_REQUEST_BYTES); a larger one, a
# big piped document, is answered in-process.
MAX_REQUEST_BYTES = 64 << 20
# Connecting to a server whose listen queue is full fails with EAGAIN at once: retry this long.
BUSY_RETRY_S = 5.0


def connect(path: Path | None = None, timeout: float = 2.0) -> socket.socket | None:
    """A connection to this user's server, or None when there is none (or it is not ours)."""
    path = path or socket_path()
    try:
        st = path.lstat()
    except OSError:
        return None
    # Only a socket owned by this user, not writable by others: never talk to someone else's.
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    deadline = time.monotonic() + BUSY_RETRY_S
    pause = 0.01
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            break
        except BlockingIOError:  # EAGAIN: the queue is full, the server is alive
            s.close()
            if time.monotonic() > deadline:
                raise ServerBusy() from None
            time.sleep(pause)
            pause = min(0.2, pause * 2)
        except OSError:  # refused: a socket file left by a server that died
            s.close()
            return None
    s.settimeout(None)
    return s


def _event(line: bytes) -> dict[str, Any]:
    """One event line, or ServerGone when it is not one (cut short, not JSON, not ours)."""
    try:
        ev = json.loads(line)
    except ValueError:
        raise ServerGone("a reply that is not JSON") from None
    if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
        raise ServerGone("a reply that is not an lcdoc event")
    if ev["event"] == "error" and not isinstance(ev.get("message"), str):
        raise ServerGone("an error event without a message")
    return ev


def events(sock: socket.socket, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Send one request and yield its events; ServerGone if the stream ends before a final one."""
    with sock, sock.makefile("rwb") as f:
        f.write(json.dumps(request).encode() + b"\n")
        f.flush()
        for line in f:
            if not line.endswith(b"\n"):
                break  # cut mid-line: the server died while writing
            ev = _event(line)
            yield ev
            if ev.get("event") in FINAL:
                return
    raise ServerGone()


def request(op: str, payload: dict[str, Any], on_event: Callable[[dict], None] | None = None,
            path: Path | None = None) -> dict[str, Any] | None:
    """The final event of one request, passing the others to on_event; None without a server."""
    if server_disabled():
        return None
    sock = connect(path)
    if sock is None:
        return None
    for ev in events(sock, {"op": op, **payload}):
        if ev.get("event") in FINAL:
            return ev
        if on_event:
            on_event(ev)
    raise ServerGone()  # pragma: no cover (events() raises first)


def ping(path: Path | None = None) -> dict[str, Any] | None:
    """The server's description (model, plan, pid), or None when none answers."""
    try:
        return request("ping", {}, path=path)
    except (ServerGone, ServerBusy, OSError, ValueError):
        return None
