"""Hostile and faulty input against the console script: issue 26's probe as a program.

    python -m lcdoc.eval.faults [--only NAME,...] [--skip-slow] [--list] [--json]

Each case makes its own files in a temporary folder, runs `python -m lcdoc` as a user would
(the packaged models, a real `lcdoc serve` where the case needs one) and checks one promise:
no secret leaves the folders given, nothing lcdoc writes is readable by other users, no damaged
or stale state is served, one client cannot stall the server, memory stays bounded on any input,
and every failure is one line naming the file. A case that needs what this machine cannot give
(mount for a full or read-only disk, root for a second uid) is reported as skipped, with why.
Prints a table of tried / passed / skipped; exit 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ANSWER_TOKENS = "16"
SECRET = "The vault combination is 31-41-59, kept by Ottoline Marsh."


class Failed(Exception):
    """The promise was broken: the message says how."""


class Skip(Exception):
    """The case cannot run on this machine: the message says why."""


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    run: Callable[["Work"], None]
    slow: bool = False


CASES: dict[str, Case] = {}


def case(group: str, slow: bool = False):
    def register(fn: Callable[["Work"], None]) -> Callable[["Work"], None]:
        name = fn.__name__.removeprefix("case_")
        CASES[name] = Case(name, group, fn, slow)
        return fn
    return register


class Work:
    """A case's folder, its environment and the console script."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "run" / "serve.sock"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "LCDOC_NO_SERVER": "",
                    "LCDOC_INDEX_DIR": str(root / "indexes"), "LCDOC_SOCKET": str(self.sock),
                    "LCDOC_ANSWER_TOKENS": ANSWER_TOKENS, "NO_COLOR": "1"}
        self.env.pop("LCDOC_NO_SERVER")

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def lcdoc(self, *args: str, input: bytes | None = None, timeout: float = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
        """The console script as a user runs it, with a loose umask (lcdoc must not rely on it)."""
        return subprocess.run([sys.executable, "-m", "lcdoc", *args], input=input,
                              capture_output=True, timeout=timeout, env={**self.env, **(env or {})},
                              stdin=None if input is not None else subprocess.DEVNULL,
                              preexec_fn=lambda: os.umask(0o022))

    def peak_rss_mb(self, *args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
        """Run the console script and measure its peak resident memory (its children included),
        through a small Python in between: ru_maxrss survives fork and exec on Linux, so it is
        read as the children's of a process that is small itself."""
        probe = ("import resource, subprocess, sys\n"
                 "r = subprocess.run(sys.argv[1:])\n"
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
                 "sys.exit(r.returncode)\n")
        r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "lcdoc", *args],
                           capture_output=True, timeout=timeout, env=self.env,
                           stdin=subprocess.DEVNULL)
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        return r, int(lines[-1]) / 1024

    @contextlib.contextmanager
    def server(self, *args: str) -> Iterator[subprocess.Popen]:
        """A real `lcdoc serve` on this case's socket, stopped at the end."""
        log = open(self.root / "serve.log", "w+b")
        proc = subprocess.Popen([sys.executable, "-m", "lcdoc", "serve", "--socket",
                                 str(self.sock), *args], stdout=log, stderr=log, env=self.env,
                                stdin=subprocess.DEVNULL)
        try:
            deadline = time.time() + 180
            while b"ready" not in (self.root / "serve.log").read_bytes():
                if proc.poll() is not None or time.time() > deadline:
                    raise Failed("lcdoc serve did not start: " + self.server_log()[-500:])
                time.sleep(0.2)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()

    def server_log(self) -> str:
        return (self.root / "serve.log").read_text(errors="replace")

    def raw(self, payload: bytes, timeout: float = 60) -> list[dict]:
        """Send bytes to the server as a client would and read its events."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(payload)
            data = b""
            while True:
                part = s.recv(1 << 16)
                if not part:
                    break
                data += part
        return [json.loads(x) for x in data.splitlines() if x.strip()]


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout.decode(errors="replace")


def err(r: subprocess.CompletedProcess) -> str:
    return r.stderr.decode(errors="replace")


def expect(cond: bool, why: str) -> None:
    if not cond:
        raise Failed(why)


FILLER = [
    "The committee reviewed the quarterly accounts and found the figures consistent with the "
    "ledger.", "Maintenance of the pumping station follows the schedule agreed with the county.",
    "Volunteers staffed the library on weekends, and the reading programme doubled.",
    "The orchard produced fewer apples than expected after a late frost in April.",
    "Road repairs on the northern bridge were postponed until the river level drops.",
]


def doc_text(fact: str, n: int = 30) -> str:
    return fact + " " + " ".join(FILLER[i % len(FILLER)] for i in range(n)) + "\n"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root in a sandbox that allows it)."""
    probe = Path(tempfile.mkdtemp(prefix="lcdoc-mnt-"))
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if not can_mount():
        raise Skip("cannot mount a tmpfs here (needs root in a sandbox that allows mount)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# --- security ------------------------------------------------------------------------------
@case("security")
def case_socket_in_a_shared_folder_leaves_it_unchanged(w: Work) -> None:
    shared = w.path("shared/x").parent
    os.chmod(shared, 0o1777)  # as /tmp is
    w.sock = shared / "lcdoc.sock"
    w.env["LCDOC_SOCKET"] = str(w.sock)
    with w.server():
        expect(mode(shared) == 0o1777, f"the shared folder became {oct(mode(shared))}")
        expect(mode(w.sock) == 0o600, f"socket is {oct(mode(w.sock))}")
    own = w.root / "own" / "deeper"
    w.sock = own / "s.sock"
    with w.server():
        expect(mode(own) == 0o700, f"lcdoc's own socket folder is {oct(mode(own))}")


@case("security")
def case_socket_in_a_folder_others_may_write_is_refused(w: Work) -> None:
    loose = w.path("loose/x").parent
    os.chmod(loose, 0o777)  # no sticky bit: anyone could swap the socket
    r = w.lcdoc("serve", "--socket", str(loose / "s.sock"), timeout=120)
    expect(r.returncode == 2 and "other users can write" in err(r),
           f"exit {r.returncode}: {err(r)[-300:]}")
    expect(mode(loose) == 0o777, "the folder's mode was changed")


@case("security")
def case_symlink_to_a_secret_outside_is_not_indexed(w: Work) -> None:
    secret = w.path("private/secret.txt")
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    w.path("docs/good.txt").write_text(doc_text("The lamp oil is stored in the blue shed."))
    os.symlink(secret, w.root / "docs" / "shadow-link.txt")
    r = w.lcdoc("index", str(w.root / "docs"), "--index", "s", "--json")
    expect(r.returncode == 0, err(r))
    expect("shadow-link.txt" in err(r) and "outside the folders given" in err(r),
           "the link was not named: " + err(r)[-300:])
    db = (w.root / "indexes" / "s" / "index.sqlite").read_bytes()
    expect(b"vault combination" not in db, "the secret's text is in the index")
    r = w.lcdoc("index", str(w.root / "docs"), "--index", "f", "--follow-links", "--json")
    expect(json.loads(out(r))["indexed"] == 2, "--follow-links did not take the link")


@case("security")
def case_everything_written_is_the_users_alone(w: Work) -> None:
    doc = w.path("docs/vault.txt")
    doc.write_text(doc_text(SECRET))
    os.chmod(doc, 0o600)
    r = w.lcdoc("index", str(doc.parent), "--index", "p")
    expect(r.returncode == 0, err(r))
    r = w.lcdoc("ask", "What is the vault combination?", str(doc), "--no-server", "--json")
    expect(r.returncode == 0, err(r))
    r = w.lcdoc("summarize", str(doc), "--out", str(w.root / "sums"), "--max-words", "20")
    expect(r.returncode == 0, err(r))
    _wait_for(lambda: list((w.root / "indexes" / ".prompt-cache").glob("*.kvstate")))
    loose = []
    for base in (w.root / "indexes", w.root / "sums"):
        for p in [base, *base.rglob("*")]:
            want = 0o700 if p.is_dir() else 0o600
            if not p.is_symlink() and mode(p) & 0o077 and p.name != "README.md":
                loose.append(f"{p.relative_to(w.root)} {oct(mode(p))} (want {oct(want)})")
    expect(not loose, "readable by others: " + "; ".join(loose[:6]))
    states = list((w.root / "indexes" / ".prompt-cache").glob("*.kvstate"))
    expect(states, "no prompt-cache state was written")
    if os.getuid() == 0:  # a real second user: nobody (65534)
        for p in [w.root / "indexes" / "p" / "index.sqlite", states[0]]:
            other = subprocess.run(["cat", str(p)], capture_output=True, user=65534)
            expect(other.returncode != 0, f"uid 65534 could read {p.name}")


# --- silent wrong data ------------------------------------------------------------------------
@case("wrong data")
def case_a_file_replaced_while_read_is_read_again(w: Work) -> None:
    from lcdoc.index import Index, update_index
    from lcdoc.index import build

    path = w.path("docs/changing.txt")
    path.write_text(doc_text("Version one says the ferry leaves at nine."))
    real = build.load_path
    writes = {"n": 0}

    def racing(p):  # a writer replaces the file right after each read
        doc = real(p)
        if writes["n"] < 1:
            writes["n"] += 1
            time.sleep(0.02)
            Path(p).write_text(doc_text("Version two says the ferry leaves at eleven."))
        return doc

    build.load_path = racing
    try:
        with Index.open("c", w.root / "indexes", create=True) as idx:
            rep = update_index(idx, [path.parent])
            stored = idx.store.document(build.doc_key(path))
    finally:
        build.load_path = real
    expect(rep.indexed == 1, f"report: {rep}")
    expect("eleven" in stored.text, "the old text was stored under the new file's stat")

    def always(p):  # a file that changes on every read is named, never stored stale
        doc = real(p)
        Path(p).write_text(doc_text(f"Version {time.time()} says nothing."))
        return doc

    build.load_path = always
    try:
        with Index.open("d", w.root / "indexes", create=True) as idx:
            rep = update_index(idx, [path.parent])
    finally:
        build.load_path = real
    expect(rep.indexed == 0 and rep.failed and "changed while" in rep.failed[0].reason,
           f"report: {rep}")


def _wait_for(found: Callable[[], list], seconds: float = 30.0) -> list:
    """What found() returns once it is not empty, or [] after seconds."""
    end = time.time() + seconds
    while not (got := found()) and time.time() < end:
        time.sleep(0.05)
    return got


@case("wrong data")
def case_a_damaged_prompt_cache_state_is_a_miss(w: Work) -> None:
    doc = w.path("docs/licence.txt")
    doc.write_text(doc_text("The licence was granted to the Hallam Rowing Club in 1911.", 60))
    q = "Who was the licence granted to?"
    first = json.loads(out(w.lcdoc("ask", q, str(doc), "--no-server", "--mode", "stuff",
                                   "--json")))
    # The state is written by a child that outlives the answering process (save_detached).
    states = _wait_for(lambda: list((w.root / "indexes" / ".prompt-cache").glob("*.kvstate")))
    expect(len(states) == 1, f"{len(states)} states written")
    raw = bytearray(states[0].read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(b ^ 0xFF for b in raw[mid : mid + 64])
    states[0].write_bytes(bytes(raw))
    r = w.lcdoc("ask", q, str(doc), "--no-server", "--mode", "stuff", "--json")
    again = json.loads(out(r))
    expect(again["tokens"].get("restored", 0) == 0,
           f"restored {again['tokens'].get('restored')} tokens from a damaged state")
    expect(again["answer"] == first["answer"], "the answer changed after a damaged state")
    fresh = json.loads(out(w.lcdoc("ask", q, str(doc), "--no-server", "--mode", "stuff",
                                   "--json")))
    expect(fresh["tokens"].get("restored", 0) > 0, "the state was not written again")


# --- the server -----------------------------------------------------------------------------
def _doc(w: Work) -> Path:
    doc = w.path("docs/station.txt")
    if not doc.exists():
        doc.write_text(doc_text("The generator is tested every Monday by Margit Olander."))
    return doc


@case("server", slow=True)
def case_an_idle_client_stalls_nobody(w: Work) -> None:
    doc = _doc(w)
    with w.server("--idle-timeout", "600"):
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(str(w.sock))  # connects, says nothing
        try:
            t0 = time.time()
            r = w.lcdoc("ask", "Who tests the generator?", str(doc), "--json", timeout=120)
            took = time.time() - t0
            expect(r.returncode == 0 and json.loads(out(r))["server"],
                   f"not answered by the server: {err(r)[-300:]}")
            expect(took < 60, f"answered after {took:.0f} s")
            pong = w.raw(b'{"op": "ping"}\n', timeout=5)
            expect(pong and pong[0]["event"] == "pong", "no pong while a client idles")
        finally:
            idle.close()


@case("server", slow=True)
def case_a_huge_request_line_is_refused_in_bounded_memory(w: Work) -> None:
    with w.server() as proc:
        before = _rss_mb(proc.pid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(w.sock))
            block = b"x" * (1 << 20)
            try:
                for _ in range(256):  # 256 MiB without a newline
                    s.sendall(block)
            except (BrokenPipeError, ConnectionResetError):
                pass
        time.sleep(0.5)
        grew = _rss_mb(proc.pid) - before
        expect(proc.poll() is None, "the server died")
        expect(grew < 200, f"the server grew by {grew:.0f} MB")
        pong = w.raw(b'{"op": "ping"}\n', timeout=5)
        expect(pong and pong[0]["event"] == "pong", "no pong after the huge request")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@case("server", slow=True)
def case_twenty_clients_at_once_are_all_served(w: Work) -> None:
    doc = _doc(w)
    with w.server():
        procs = [subprocess.Popen([sys.executable, "-m", "lcdoc", "ask", "Who tests the "
                                   "generator?", str(doc), "--json", "--max-tokens", "8"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=w.env,
                                  stdin=subprocess.DEVNULL) for _ in range(20)]
        results = [p.communicate(timeout=600) for p in procs]
    served = sum(1 for o, _ in results if o and json.loads(o).get("server"))
    expect(served == 20, f"{served} of 20 answered by the server; others: "
                         + next((e.decode()[-200:] for o, e in results
                                 if not (o and json.loads(o).get("server"))), ""))


class _FakeServer:
    """A socket that answers every request with the given bytes, then closes."""

    def __init__(self, path: Path, reply: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.listen(8)
        self.reply = reply
        import threading

        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                with contextlib.suppress(OSError):
                    conn.recv(1 << 16)
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@case("server")
def case_a_malformed_reply_means_working_in_process(w: Work) -> None:
    doc = _doc(w)
    for reply in (b'{"event": "error"}\n', b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                  b'{"event": "text", "text": "half', b'[1, 2]\n',
                  b'{"event": "ask", "result": {"route": 3}}\n'):
        fake = _FakeServer(w.sock, reply)
        try:
            r = w.lcdoc("ask", "Who tests the generator?", str(doc), "--json", timeout=300)
        finally:
            fake.close()
            w.sock.unlink(missing_ok=True)
        expect(r.returncode == 0, f"reply {reply[:30]!r}: exit {r.returncode}: {err(r)[-200:]}")
        expect("working in-process" in err(r), f"reply {reply[:30]!r}: no line says why")
        expect(not json.loads(out(r))["server"], "answered by the fake server")


@case("server", slow=True)
def case_a_dead_clients_work_is_stopped(w: Work) -> None:
    doc = _doc(w)
    big = w.path("docs/long.txt")  # ~6,000 tokens: 20 s of prefill on a 2-core CPU
    big.write_text(doc_text("The long report names the harbour master, Ines Roe.", 400))
    with w.server():
        req = {"op": "ask", "question": "Who is the harbour master?", "paths": [str(big)],
               "mode": "stuff", "stream": False, "settings": {}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(w.sock))
            s.sendall(json.dumps(req).encode() + b"\n")
            s.recv(1 << 16)  # the route event: the prefill is under way
        t0 = time.time()
        pong = w.raw(b'{"op": "ping"}\n', timeout=30)  # never waits on the model
        r = w.lcdoc("ask", "Who tests the generator?", str(doc), "--json", "--max-tokens", "8",
                    timeout=300)
        took = time.time() - t0
        expect(pong[0]["event"] == "pong", "no pong")
        expect(r.returncode == 0 and json.loads(out(r))["server"], "not answered by the server")
        expect("went away" in w.server_log(), "the server never noticed the client left")
        expect(took < 12, f"the next client waited {took:.0f} s (the dead client's prefill "
                          f"went on)")


@case("server", slow=True)
def case_the_server_validates_as_the_cli_does(w: Work) -> None:
    with w.server():
        bad = [
            {"op": "ask", "question": "q", "paths": [], "mode": "drop table"},
            {"op": "search", "query": "q", "index": "x", "k": -1},
            {"op": "search", "query": "q", "index": "x", "k": True},
            {"op": "ask", "question": "q", "paths": "not a list"},
            {"op": "ask", "question": ["q"]},
            {"op": "summarize", "paths": [1, 2]},
            {"op": "ask", "question": "q", "settings": {}, "history": [["only one"]]},
            {"op": "explode"},
        ]
        for req in bad:
            evs = w.raw(json.dumps(req).encode() + b"\n", timeout=30)
            e = evs[-1] if evs else {}
            expect(e.get("event") == "error" and e.get("exit_code") == 2
                   and "internal" not in e.get("message", ""),
                   f"{req}: answered {e}")
    r = w.lcdoc("search", "q", "-k", "-1")
    expect(r.returncode == 2, f"search -k -1: exit {r.returncode}")


# --- bounded on any input --------------------------------------------------------------------
def _gzip_zeros(path: Path, gib: float, text: bool = False) -> None:
    block = (b"all work and no play makes a dull manual. " * 24000)[: 1 << 20] if text \
        else bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as f:
        for _ in range(int(gib * 1024)):
            f.write(block)


@case("bounded", slow=True)
def case_gzip_bombs_are_refused_in_bounded_memory(w: Work) -> None:
    _gzip_zeros(w.path("docs/zeros.txt.gz"), 1.0)
    _gzip_zeros(w.path("docs/words.txt.gz"), 1.0, text=True)
    w.path("docs/good.txt").write_text(doc_text("The lamp oil is stored in the blue shed."))
    r, peak = w.peak_rss_mb("index", str(w.root / "docs"), "--index", "g", "--json")
    rep = json.loads(out(r))
    reasons = {Path(f["path"]).name: f["reason"] for f in rep["failed"]}
    expect(rep["indexed"] == 1, f"indexed {rep['indexed']}")
    for name in ("zeros.txt.gz", "words.txt.gz"):
        expect("decompresses to more than" in reasons.get(name, ""), f"{name}: {reasons.get(name)}")
    expect(peak < 1500, f"peak memory {peak:.0f} MB")


@case("bounded", slow=True)
def case_a_long_one_line_file_is_chunked_in_bounded_memory(w: Work) -> None:
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima ".split()
    line = " ".join(words[i % len(words)] + str(i % 97) for i in range(3_000_000))  # ~20 MB
    big = w.path("docs/one-line.txt")
    big.write_text(line)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a probe started
    # from a large process (pytest with models loaded) would report its parent's size.
    probe = ("import sys\n"
             "from lcdoc.ingest import chunk_document, load_path\n"
             "cs = chunk_document(load_path(sys.argv[1]))\n"
             "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
             "print(len(cs), max(c.n_tokens for c in cs), int(hwm.split()[1]) // 1024)\n")
    r = subprocess.run([sys.executable, "-c", probe, str(big)], capture_output=True, env=w.env,
                       timeout=900)
    expect(r.returncode == 0, err(r)[-400:])
    n, longest, peak = (int(x) for x in out(r).split())
    size_mb = big.stat().st_size / 2**20
    expect(longest <= 256, f"a chunk of {longest} tokens")
    expect(peak < 25 * size_mb + 400, f"peak {peak} MB for a {size_mb:.0f} MB file ({n} chunks)")


@case("bounded")
def case_a_folder_nested_1200_deep_is_walked(w: Work) -> None:
    for i in range(5):
        w.path(f"docs/note{i}.txt").write_text(doc_text(f"Note {i} names the heron colony."))
    deep = w.root / "docs"
    for _ in range(1200):  # one level at a time: os.makedirs itself recurses
        deep = deep / "d"
        deep.mkdir()
    (deep / "bottom.txt").write_text(doc_text("The bottom note mentions the bell tower."))
    r = w.lcdoc("index", str(w.root / "docs"), "--index", "n", "--json")
    expect(r.returncode == 0, err(r)[-300:])
    expect(json.loads(out(r))["indexed"] == 6, out(r)[:300])


@case("bounded", slow=True)
def case_ctrl_c_stops_indexing_a_large_document_within_seconds(w: Work) -> None:
    big = w.path("docs/big.txt")
    big.write_text("\n\n".join(doc_text(f"Section {i} of the ledger.", 6) for i in range(6000)))
    w.path("docs/small.txt").write_text(doc_text("A small note on the orchard."))
    # As a foreground process in a terminal: a harness started in the background (`cmd &` in a
    # shell without job control) has SIGINT ignored, and its children would inherit that.
    proc = subprocess.Popen([sys.executable, "-m", "lcdoc", "index", str(w.root / "docs"),
                             "--index", "k"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=w.env, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(12)  # reading done, embedding under way
    expect(proc.poll() is None, "indexing finished before the interrupt")
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise Failed("still running 10 s after Ctrl-C")
    took = time.time() - t0
    expect(proc.returncode == 130, f"exit {proc.returncode}")
    expect(took < 5, f"stopped {took:.1f} s after Ctrl-C")
    from lcdoc.eval.killtest import check_index

    bad = check_index(w.root / "indexes" / "k")
    expect(bad is None, f"the index does not open: {bad}")


# --- clear messages, nothing half-made ------------------------------------------------------
@case("messages")
def case_hostile_file_names_are_escaped(w: Work) -> None:
    names = ["new\nline.txt", "esc\x1b[31mred.txt", "a[/b].txt", "[reverse]REV.txt", "tab\tx.txt"]
    for i, name in enumerate(names):
        w.path(f"docs/{name}").write_text(doc_text(f"Entry {i}: the heron colony nests here."))
    unreadable = os.getuid() != 0  # root reads a file whatever its mode
    os.chmod(w.path("docs/esc\x1b[31mred.txt"), 0o000) if unreadable else None
    r = w.lcdoc("index", str(w.root / "docs"), "--index", "h")
    expect(r.returncode == int(unreadable), err(r)[-300:])  # 1: the unreadable one is named
    s = w.lcdoc("search", "heron colony", "--index", "h", "-k", "5")
    text = out(s) + err(s) + err(r) + out(r)
    expect(s.returncode == 0, f"search exit {s.returncode}: {err(s)[-300:]}")
    expect("\x1b" not in text, "a raw escape reached the terminal")
    expect("[reverse]REV.txt" in out(s), "rich markup in a name was swallowed")
    expect("a[/b].txt" in out(s), "a name with [/b] was lost")
    lines = [x for x in out(s).splitlines() if x.strip()]
    expect(not any(x.startswith("line.txt") for x in lines), "a newline in a name forged a line")
    expect("new\\nline.txt" in out(s), "the newline is not shown escaped")


def _full_disk_index(w: Work, mnt: Path) -> None:
    w.env["LCDOC_INDEX_DIR"] = str(mnt)
    # no room even for a new index: nothing half-made may remain
    filler = mnt / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(1 << 16))
    r = w.lcdoc("index", str(w.root / "docs"), "--index", "new")
    expect(r.returncode == 1 and "internal error" not in err(r), f"exit {r.returncode}: "
                                                                 f"{err(r)[-300:]}")
    expect("full" in err(r) or "No space" in err(r), f"the disk-full reason is hidden: {err(r)}")
    leftovers = [p.name for p in (mnt / "new").glob("*") if p.name.startswith("index.sqlite")]
    expect(not leftovers, f"left {leftovers}")
    s = w.lcdoc("search", "heron", "--index", "new")
    expect(s.returncode == 1 and "no such index" in err(s), f"search said: {err(s)[-200:]}")


@case("messages", slow=True)
def case_a_full_disk_is_named_and_leaves_nothing_half_made(w: Work) -> None:
    for i in range(10):
        w.path(f"docs/n{i}.txt").write_text(doc_text(f"Note {i}: heron colony.", 200))
    with tmpfs(w.root / "mnt", "400k") as mnt:
        w.env["LCDOC_INDEX_DIR"] = str(mnt)
        r = w.lcdoc("index", str(w.root / "docs"), "--index", "full")
        expect(r.returncode == 1 and "internal error" not in err(r),
               f"exit {r.returncode}: {err(r)[-300:]}")
        expect("disk is full" in err(r), f"the disk-full reason is hidden: {err(r)[-300:]}")
        from lcdoc.eval.killtest import check_index

        bad = check_index(mnt / "full")
        expect(bad is None, f"the index does not open after a full disk: {bad}")
        _full_disk_index(w, mnt)


@case("messages")
def case_sqlite_full_is_named_not_a_rollback_error(w: Work) -> None:
    from lcdoc.errors import IndexWriteError
    from lcdoc.index import Index, update_index

    for i in range(10):
        w.path(f"docs/n{i}.txt").write_text(doc_text(f"Note {i}: heron colony.", 100))
    with Index.open("q", w.root / "indexes", create=True) as idx:
        idx.store.db.execute("PRAGMA max_page_count = 40")  # SQLite's own SQLITE_FULL
        try:
            update_index(idx, [w.root / "docs"], commit_chunks=8)
            raise Failed("no error on a full database")
        except IndexWriteError as e:
            expect("disk is full" in str(e), str(e))
    with Index.open("q", w.root / "indexes") as idx:
        expect(idx.store.counts()["documents"] >= 0, "does not open")


@case("messages", slow=True)
def case_a_read_only_index_is_searched_and_writes_say_read_only(w: Work) -> None:
    w.path("docs/a.txt").write_text(doc_text("The heron colony nests by the weir."))
    with tmpfs(w.root / "mnt", "64m") as mnt:
        w.env["LCDOC_INDEX_DIR"] = str(mnt)
        r = w.lcdoc("index", str(w.root / "docs"), "--index", "ro")
        expect(r.returncode == 0, err(r))
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        s = w.lcdoc("search", "heron", "--index", "ro", "--json")
        expect(s.returncode == 0 and json.loads(out(s))["results"],
               f"search on a read-only index: {err(s)[-300:]}")
        a = w.lcdoc("ask", "Where does the heron colony nest?", "--index", "ro", "--no-server",
                    "--json")
        expect(a.returncode == 0, f"ask on a read-only index: {err(a)[-300:]}")
        i = w.lcdoc("index", str(w.root / "docs"), "--index", "ro")
        expect(i.returncode == 1 and "read-only" in err(i) and "internal" not in err(i),
               f"index on a read-only index: {err(i)[-300:]}")


@case("messages")
def case_a_pdf_past_the_decompression_limit_says_so(w: Work) -> None:
    pdf = w.path("docs/huge-stream.pdf")
    pdf.write_bytes(_pdf_with_stream(b"BT /F1 12 Tf 72 712 Td (x) Tj ET\n" * 3_000_000))
    r = w.lcdoc("index", str(pdf.parent), "--index", "pdf", "--json")
    reasons = [f["reason"] for f in json.loads(out(r))["failed"]]
    expect(reasons and "limit" in reasons[0] and "scanned" not in reasons[0], f"said: {reasons}")


def _pdf_with_stream(content: bytes) -> bytes:
    """A one-page PDF whose page content is `content`, Flate-compressed."""
    body = zlib.compress(content, 9)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body
            + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    outb, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(outb))
        outb += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(outb)
    outb += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    outb += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    outb += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return outb


# --- the program ----------------------------------------------------------------------------
def run_case(c: Case, keep: bool = False) -> tuple[str, str, float]:
    """('pass' | 'FAIL' | 'skip', detail, seconds) for one case in a fresh folder."""
    root = Path(tempfile.mkdtemp(prefix=f"lcdoc-fault-{c.name[:20]}-"))
    t0 = time.time()
    try:
        c.run(Work(root))
        return "pass", "", time.time() - t0
    except Skip as e:
        return "skip", str(e), time.time() - t0
    except Failed as e:
        return "FAIL", str(e), time.time() - t0
    except Exception as e:  # noqa: BLE001 - a crash in a case is a failure with its reason
        return "FAIL", f"{type(e).__name__}: {e}", time.time() - t0
    finally:
        if not keep:
            subprocess.run(["umount", "-l", str(root / "mnt")], capture_output=True)
            subprocess.run(["rm", "-rf", str(root)])  # shutil.rmtree recurses: 1,200 levels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lcdoc.eval.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated case names (see --list)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the cases marked slow")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep each case's folder")
    a = ap.parse_args(argv)
    chosen = [CASES[n] for n in a.only.split(",")] if a.only else list(CASES.values())
    if a.skip_slow:
        chosen = [c for c in chosen if not c.slow]
    if a.list:
        for c in chosen:
            print(f"{c.group:10} {c.name}{'  (slow)' if c.slow else ''}")
        return 0
    rows = []
    for c in chosen:
        verdict, detail, secs = run_case(c, a.keep)
        rows.append({"case": c.name, "group": c.group, "result": verdict, "detail": detail,
                     "seconds": round(secs, 1)})
        print(f"{verdict:4} {c.name} ({secs:.1f} s){': ' + detail if detail else ''}",
              file=sys.stderr, flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))
    else:
        print("| group | case | result | seconds |\n|---|---|---|---:|")
        for r in rows:
            print(f"| {r['group']} | {r['case']} | {r['result']}"
                  f"{' (' + r['detail'] + ')' if r['detail'] else ''} | {r['seconds']} |")
        tried = [r for r in rows if r["result"] != "skip"]
        print(f"\ntried {len(tried)}, passed {sum(r['result'] == 'pass' for r in tried)}, "
              f"skipped {len(rows) - len(tried)}")
    return 1 if any(r["result"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
