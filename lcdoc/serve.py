"""`lcdoc serve`: the model, the embedder and document states stay resident between questions.

A question about a document the server has just answered from prefills only the new question:
the document's state is still in the context (on the GPU when there is one), and states of
earlier documents wait in memory within a planned byte budget. It listens on a Unix socket that
only its user can open, answers one request at a time (the model is one), and exits after an
idle timeout, on SIGTERM or on Ctrl-C, removing its socket.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from lcdoc.errors import LcdocError, UsageError
from lcdoc.settings import Settings

# Without --memory-gb, document states may take this share of the RAM left once the model and
# the embedder are loaded.
MEMORY_SHARE = 0.5


class _UnixServer(socketserver.UnixStreamServer):
    timeout = 0.5  # handle_request() returns this often, for the idle check


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
                         s.embed_precision or default_precision())
        except LcdocError as e:
            self.log(f"lcdoc serve: no embedder ({e}); retrieval will load it per request")
        n_seq = self.parallel or 1  # each sequence costs a context's cache: only when asked
        self.engine = Engine(s.model, n_ctx=s.ctx, kv_type=s.kv_type, gpu_layers=s.gpu_layers,
                             cache_dir=s.index_dir / ".prompt-cache", n_threads=s.threads,
                             n_seq=n_seq, keep_resident=True, memory_bytes=0,
                             disk_bytes=s.prompt_cache_bytes)
        budget = self.memory_bytes if self.memory_bytes is not None else \
            int(ram_available() * MEMORY_SHARE)
        self.engine.cache.memory_budget = budget

    def bind(self) -> None:
        """Create the socket: its folder 0700, the socket 0600, a stale one replaced."""
        from lcdoc import client

        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_uid == os.getuid() and folder != Path.home():
            os.chmod(folder, 0o700)
        if self.path.exists() or self.path.is_symlink():
            live = client.ping(self.path)
            if live is not None:
                raise UsageError(f"a server is already running on {self.path} (pid {live.get('pid')})")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = _UnixServer(str(self.path), self._handler_class())
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

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
                if self.idle_timeout and idle > self.idle_timeout:
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
        """One request: check the peer is this user, dispatch, stream events back."""
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            self.log(f"lcdoc serve: refused a connection from uid {uid} (pid {pid})")
            return

        def send(event: str, **fields: Any) -> None:
            wfile.write(json.dumps({"event": event, **fields}).encode() + b"\n")
            wfile.flush()

        try:
            req = json.loads(rfile.readline() or b"{}")
            op = req.get("op")
            t0 = time.perf_counter()
            if op == "ping":
                send("pong", **self.describe())
            elif op == "ask":
                self._ask(req, send)
            elif op == "search":
                self._search(req, send)
            elif op == "summarize":
                self._summarize(req, send)
            else:
                raise UsageError(f"unknown request {op!r}")
            if op != "ping":
                self.log(f"lcdoc serve: {op} in {time.perf_counter() - t0:.2f} s")
        except (BrokenPipeError, ConnectionResetError):
            self.log("lcdoc serve: the client went away mid-request")
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
        except OSError:
            pass

    def _settings(self, req: dict) -> Settings:
        flags = req.get("settings") or {}
        changes = {k: (Path(flags[k]) if k in ("index_dir", "embed_model") and flags.get(k) else
                       flags.get(k)) for k in ("index_dir", "embed_model", "answer_tokens",
                                               "chunk_tokens", "chunk_overlap", "max_file_mb")}
        return self.settings.replace(**changes)

    def mismatch(self, req: dict) -> str | None:
        """Why this server's model or plan is not the one the client asked for, or None."""
        flags = req.get("settings") or {}
        e = self.engine
        if flags.get("model") and Path(flags["model"]).expanduser().resolve() != e.path.resolve():
            return f"it runs {e.path.name}, not {Path(flags['model']).name}"
        if flags.get("ctx") and int(flags["ctx"]) != e.n_ctx:
            return f"it runs a {e.n_ctx}-token context, not {flags['ctx']}"
        if flags.get("kv_type") and flags["kv_type"] != e.plan.type_k:
            return f"its KV cache is {e.plan.type_k}, not {flags['kv_type']}"
        if flags.get("gpu_layers") is not None and int(flags["gpu_layers"]) != e.plan.n_gpu_layers:
            return f"it has {e.plan.n_gpu_layers} GPU layers, not {flags['gpu_layers']}"
        return None

    def _ask(self, req: dict, send) -> None:
        from lcdoc.ask import ask

        why = self.mismatch(req)
        if why:
            send("mismatch", reason=why)
            return
        stdin = base64.b64decode(req["stdin"]) if req.get("stdin") is not None else None
        ans = ask(req["question"], req.get("paths") or [], req.get("index"), req.get("mode", "auto"),
                  engine=self.engine, settings=self._settings(req),
                  on_text=(lambda t: send("text", text=t)) if req.get("stream") else None,
                  on_route=lambda r: send("route", route=r.route, reasons=list(r.reasons)),
                  stdin_data=stdin, history=[tuple(h) for h in req.get("history") or []])
        send("answer", answer={**ans.as_json(), "server": True})

    def _search(self, req: dict, send) -> None:
        from lcdoc.index import Index

        s = self._settings(req)
        with Index.open(req["index"], s.index_dir, allow_path=False) as idx:
            hits = idx.search(req["query"], k=int(req.get("k", 5)), mode=req.get("mode", "hybrid"))
        send("search", results=[h.as_json() for h in hits], server=True)

    def _summarize(self, req: dict, send) -> None:
        from lcdoc.summarize import summarize_paths

        why = self.mismatch(req)
        if why:
            send("mismatch", reason=why)
            return
        s = self._settings(req)
        out = Path(req["out"]) if req.get("out") else None
        parallel = min(int(req.get("parallel") or self.engine.plan.n_seq), self.engine.plan.n_seq)
        self.engine.forget_resident()  # side-by-side batches reuse the context's cells
        rep = summarize_paths(
            req["paths"], self.engine, out, s.index_dir / ".summaries", req.get("style", "brief"),
            int(req.get("max_words", 150)), req.get("prompt"), tuple(req.get("include") or ()),
            tuple(req.get("exclude") or ()),
            on_result=lambda sm, reused: send("result", summary=sm.as_json(), reused=reused),
            on_failure=lambda p, why: send("failure", path=p, reason=why),
            on_level=lambda m: send("log", message=m),
            on_progress=lambda stage, done, total, info="": send(
                "progress", stage=stage, done=done, total=total, info=info),
            parallel=parallel)
        extra: dict[str, Any] = {}
        everything = rep.done + rep.reused
        if req.get("digest") and everything:
            from lcdoc.summarize import digest

            extra = {"digest": digest(everything, self.engine),
                     "documents": [x.path for x in everything]}
        send("summarize", done=len(rep.done), reused=len(rep.reused),
             failed=[list(f) for f in rep.failed], parallel=parallel, server=True, **extra)
