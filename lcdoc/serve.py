"""`lcdoc serve`: the model, the embedder and document states stay resident between questions.

A question about a document the server has just answered from prefills only the new question:
the document's state is still in the context (on the GPU when there is one), and states of
earlier documents wait in memory within a planned byte budget. It listens on a Unix socket that
only its user can open, answers one request at a time (the model is one), and exits after an
idle timeout, on SIGTERM or on Ctrl-C, removing its socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import stat
import struct
import threading
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from lcdoc.app.local import LocalApp
from lcdoc.app.requests import SERVED, from_json, sending
from lcdoc.errors import Cancelled, LcdocError, UsageError
from lcdoc.settings import Settings

# Without --memory-gb, document states may take this share of the RAM left once the model and
# the embedder are loaded.
MEMORY_SHARE = 0.5
# A client has this long to send its request line: one that connects and says nothing must not
# hold anything (each connection has its own thread; the model is taken only for a whole request).
REQUEST_TIMEOUT_S = 10.0
# The longest request line (a piped document travels inside it, base64): the client works
# in-process for anything larger, so a 1 GiB line costs the server nothing.
MAX_REQUEST_BYTES = 64 << 20
# Connections the kernel queues while the server is busy accepting (20 clients at once are
# normal for a script with xargs -P).
BACKLOG = 128


class ClientGone(Exception):
    """The client closed its connection: the work it asked for is stopped."""


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    timeout = 0.5  # handle_request() returns this often, for the idle check
    daemon_threads = True
    request_queue_size = BACKLOG


class Server:
    """One resident Engine and embedder behind a user-only Unix socket."""

    def __init__(self, settings: Settings, path: Path, idle_timeout: float = 1800.0,
                 memory_bytes: int | None = None, parallel: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.path = path
        self.idle_timeout = idle_timeout
        self.memory_bytes = memory_bytes
        self.parallel = parallel
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.engine = None
        self.last_active = time.monotonic()
        self._server: _UnixServer | None = None
        self._inode: int | None = None
        self._work = threading.Lock()  # the model is one: one request at a time uses it
        self._busy = 0  # requests being answered (the idle timeout waits for them)

    # --- start-up -------------------------------------------------------------------------
    def load(self) -> None:
        """The embedder first (torch), then the model: both stay for the server's life."""
        from lcdoc.engine.llm import Engine
        from lcdoc.engine.system import ram_available
        from lcdoc.index.embed import get_embedder
        from lcdoc.index.index import default_precision

        s = self.settings
        try:  # at the precision new indexes get here (each index's own is loaded when it differs)
            get_embedder(str(s.embed_model) if s.embed_model else None,
                         s.embed_precision or default_precision(), runtime=s.embed_runtime)
        except LcdocError as e:
            self.log(f"lcdoc serve: no embedder ({e}); retrieval will load it per request")
        n_seq = self.parallel or 1  # each sequence costs a context's cache: only when asked
        self.engine = Engine.from_settings(s, n_seq=n_seq, keep_resident=True, memory_bytes=0)
        self.app = LocalApp(self.engine, serving=True)
        budget = self.memory_bytes if self.memory_bytes is not None else \
            int(ram_available() * MEMORY_SHARE)
        self.engine.cache.memory_budget = budget

    def bind(self) -> None:
        """Create the socket 0600 in a folder only this user can change: lcdoc's own folder
        (and one --socket names that does not exist yet) is made 0700; any other folder that
        exists is checked and never changed (a socket straight in /tmp must not chmod /tmp)."""
        from lcdoc.app import client

        folder = self.path.parent
        if not folder.exists() or folder == client.own_socket_folder():
            from lcdoc.private import private_dir

            private_dir(folder)  # made, or (lcdoc's own, and this user's) tightened, 0700
        self._check_folder(folder)
        if self.path.exists() or self.path.is_symlink():
            live = client.ping(self.path)
            if live is not None:
                raise UsageError(f"a server is already running on {self.path} (pid {live.get('pid')})")
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise UsageError(f"{self.path}: exists and is not a socket; choose another --socket")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = _UnixServer(str(self.path), self._handler_class())
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

    @staticmethod
    def _check_folder(folder: Path) -> None:
        """Refuse a folder where another user could replace the socket: one not ours and not
        a sticky shared folder like /tmp, or one others may write without the sticky bit."""
        st = folder.stat()
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{folder}: not a folder")
        if st.st_mode & 0o022 and not sticky:
            raise UsageError(f"{folder}: other users can write there; put the socket in a "
                             f"folder of your own (--socket)")
        if st.st_uid not in (os.getuid(), 0) and not sticky:
            raise UsageError(f"{folder}: belongs to another user; put the socket in a folder "
                             f"of your own (--socket)")

    def describe(self) -> dict[str, Any]:
        e = self.engine
        return {"pid": os.getpid(), "socket": str(self.path), "model": str(e.path),
                "n_ctx": e.n_ctx, "kv": e.plan.type_k, "device": e.plan.device,
                "n_seq": e.plan.n_seq, "memory_budget_bytes": e.cache.memory_budget,
                "idle_timeout_s": self.idle_timeout}

    # --- the loop -------------------------------------------------------------------------
    def serve(self, on_ready: Callable[[dict], None] | None = None) -> None:
        """Answer requests until SIGTERM, Ctrl-C or the idle timeout; then clean up."""
        def stop(signum, _frame):
            raise SystemExit(0)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            self.load()
            self.bind()
            if on_ready:
                on_ready(self.describe())
            self.last_active = time.monotonic()
            while True:
                self._server.handle_request()
                idle = time.monotonic() - self.last_active
                if self.idle_timeout and idle > self.idle_timeout and not self._busy:
                    self.log(f"lcdoc serve: idle for {idle:.0f} s, exiting")
                    break
        except KeyboardInterrupt:
            self.log("lcdoc serve: interrupted, exiting")
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.server_close()
            self._server = None
            try:
                if self.path.stat().st_ino == self._inode:  # still ours, not a successor's
                    self.path.unlink()
            except OSError:
                pass
        if self.engine is not None:
            self.engine.cache.wait()

    # --- requests -------------------------------------------------------------------------
    def _handler_class(self):
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server.handle(self.connection, self.rfile, self.wfile)

        return Handler

    def handle(self, conn: socket.socket, rfile, wfile) -> None:
        """One request, on its own thread: check the peer is this user, read the request line
        within a time and size bound, then take the model and stream events back."""
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            self.log(f"lcdoc serve: refused a connection from uid {uid} (pid {pid})")
            return

        def send(event: str, **fields: Any) -> None:
            wfile.write(json.dumps({"event": event, **fields}).encode() + b"\n")
            wfile.flush()

        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            raw = read_request(rfile)
            conn.settimeout(WRITE_TIMEOUT_S)  # a client that stops reading is a client gone
            if raw.get("op") == "ping" and len(raw) == 1:
                send("pong", **self.describe())
                return
            req = check_request(raw)
            op = req.op
            self._busy += 1
            try:
                with self._work:
                    t0 = time.perf_counter()
                    self.engine.cancel = lambda: client_gone(conn)
                    try:
                        self.run(req, send)
                    finally:
                        self.engine.cancel = None
                self.log(f"lcdoc serve: {op} in {time.perf_counter() - t0:.2f} s")
            finally:
                self._busy -= 1
        except (BrokenPipeError, ConnectionResetError, ClientGone, Cancelled, TimeoutError):
            self.log("lcdoc serve: the client went away mid-request; its work was stopped")
        except LcdocError as e:
            self._send_error(send, type(e).__name__, str(e), e.exit_code)
        except Exception as e:  # one bad request must not take the server down
            self.log("lcdoc serve: internal error\n" + traceback.format_exc())
            self._send_error(send, type(e).__name__, f"internal error in the server: {e}", 1)
        finally:
            self.last_active = time.monotonic()

    @staticmethod
    def _send_error(send, kind: str, message: str, code: int) -> None:
        try:
            send("error", type=kind, message=message, exit_code=code)
        except (OSError, ValueError):
            pass

    def mismatch(self, s: Settings) -> str | None:
        """Why this server's model or plan is not the one the request's settings ask for, or
        None (settings left unset take whatever the server runs)."""
        e = self.engine
        if s.model and Path(s.model).expanduser().resolve() != e.path.resolve():
            return f"it runs {e.path.name}, not {Path(s.model).name}"
        if s.ctx and int(s.ctx) != e.n_ctx:
            return f"it runs a {e.n_ctx}-token context, not {s.ctx}"
        if s.kv_type and s.kv_type != e.plan.type_k:
            return f"its KV cache is {e.plan.type_k}, not {s.kv_type}"
        if s.gpu_layers is not None and int(s.gpu_layers) != e.plan.n_gpu_layers:
            return f"it has {e.plan.n_gpu_layers} GPU layers, not {s.gpu_layers}"
        return None

    def run(self, req: Any, send: Callable[..., None]) -> None:
        """One request on the resident model: its events streamed back as they happen, then
        its result (or why this server does not fit it)."""
        why = self.mismatch(req.settings) if req.op in ("ask", "summarize") else None
        if why:
            send("mismatch", reason=why)
            return
        result = getattr(self.app, req.op)(req, sending(send, getattr(req, "stream", False)))
        send(req.op, result=result.as_json())


# --- the wire: reading and checking a request -----------------------------------------------
WRITE_TIMEOUT_S = 120.0  # a client that reads nothing for this long is taken for gone

def read_request(rfile) -> dict:
    """One request line, at most MAX_REQUEST_BYTES, as a JSON object; UsageError otherwise."""
    line = rfile.readline(MAX_REQUEST_BYTES + 1)
    if len(line) > MAX_REQUEST_BYTES:
        raise UsageError(f"request larger than {MAX_REQUEST_BYTES >> 20} MiB")
    if not line.endswith(b"\n"):
        raise UsageError("request cut short (no end of line)")
    try:
        req = json.loads(line)
    except ValueError as e:
        raise UsageError(f"request is not JSON ({e})") from e
    if not isinstance(req, dict):
        raise UsageError("request is not a JSON object")
    return req


def check_request(req: dict) -> Any:
    """The typed request (lcdoc.app.requests) a JSON object describes, every field checked as
    the CLI checks it: anything this user runs may connect to the socket."""
    if req.get("op") not in SERVED:
        raise UsageError(f"unknown request {req.get('op')!r}")
    return from_json(req)


def client_gone(conn: socket.socket) -> bool:
    """Whether the client has closed its end (a readable socket that reads nothing)."""
    import select

    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def default_socket() -> Path:
    """LCDOC_SOCKET, else lcdoc's own folder in the user's runtime folder (or ~/.cache/lcdoc)."""
    from lcdoc.app import client

    return client.socket_path()
