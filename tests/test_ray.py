"""`--ray`: summarize and index on a real Ray cluster started on localhost by `ray start`, compared
with local runs of the same commands; a worker killed mid-run has its documents redone."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FILLER

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

LCDOC = shutil.which("lcdoc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
# Loopback only, with Ray's token authentication (the token is made by `ray start` if missing).
# Ray 2.60 starts a token-authenticated head only with a token given (it no longer makes one):
# this cluster's own, for the head and every client of it.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
TOPICS = ["pump filters", "orchard frost", "bridge repairs", "library shelves", "harbour festival",
          "leave policy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real Ray head on localhost, 2 CPUs, stopped at the end."""
    ray_exe = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    tmp = Path("/tmp") / f"lcdoc-ray-{os.getpid()}"  # Ray's socket paths must stay short
    port = _free_port()
    env = {**os.environ, **RAY_ENV}
    subprocess.run([ray_exe, "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                   check=True, capture_output=True, env=env, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_exe, "stop", "--force"], capture_output=True, env=env, timeout=120)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raydocs")
    for i, topic in enumerate(TOPICS):
        body = " ".join(FILLER[(i + j) % 5] for j in range(3))
        (root / f"doc{i}.txt").write_text(f"Report {i} is about the {topic}. {body}\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF garbage")
    return root


def run(args: list[str], tmp: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "LCDOC_INDEX_DIR": str(tmp / "indexes"), "LCDOC_SOCKET": str(tmp / "no.sock"),
           **RAY_ENV}
    return subprocess.run([LCDOC, *args], capture_output=True, text=True, env=env, timeout=900, **kw)


def summaries(out: str) -> dict[str, str]:
    rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    got = {Path(r["path"]).name: r["summary"] for r in rows}
    assert len(got) == len(rows)  # each document reported once
    return got


SUM = ["--json", "--max-words", "30"]


@pytest.fixture(scope="module")
def local_summaries(folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    p = run(["summarize", str(folder), "--out", str(tmp / "out"), *SUM], tmp)
    assert p.returncode == 1 and "broken.pdf" in p.stderr
    return summaries(p.stdout)


def test_summarize_on_ray_equals_local_names_the_broken_file_and_resumes(
        cluster, folder, local_summaries, tmp_path):
    p = run(["summarize", str(folder), "--out", str(tmp_path / "out"), "--ray", cluster, *SUM], tmp_path)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "broken.pdf" in p.stderr and "Ray:" in p.stderr
    assert summaries(p.stdout) == local_summaries
    assert sorted(x.name for x in (tmp_path / "out").glob("*.md")) == \
        sorted([f"doc{i}.txt.md" for i in range(len(TOPICS))] + ["index.md"])
    again = run(["summarize", str(folder), "--out", str(tmp_path / "out"), "--ray", cluster, *SUM],
                tmp_path)
    assert again.returncode == 1 and summaries(again.stdout) == local_summaries
    assert f"0 summarised, {len(TOPICS)} reused" in again.stderr


def _worker_pids(name: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if f"ray::{name}" in line]


def test_a_worker_killed_mid_run_has_its_documents_redone_once(cluster, folder, local_summaries,
                                                               tmp_path):
    env = {**os.environ, "LCDOC_INDEX_DIR": str(tmp_path / "indexes"),
           "LCDOC_SOCKET": str(tmp_path / "no.sock"), **RAY_ENV}
    proc = subprocess.Popen([LCDOC, "summarize", str(folder), "--out", str(tmp_path / "out"),
                             "--ray", cluster, "--workers", "2", *SUM], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    deadline = time.time() + 600
    while killed is None and time.time() < deadline and proc.poll() is None:
        # Mid-run: a worker is busy on a document (the first one, or with one already written).
        busy = _worker_pids("SummarizeWorker.summarize")
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=900)
    assert killed is not None, f"the run ended before a worker could be killed: {err[-1500:]}"
    assert proc.returncode == 1 and "broken.pdf" in err, err[-1500:]
    assert "its worker died; queued again" in err, err[-1500:]
    assert summaries(out) == local_summaries  # every document once, as a local run wrote it


def _search(tmp: Path, query: str) -> list[tuple[str, str]]:
    p = run(["search", query, "--index", "r", "--json", "-k", "5"], tmp)
    assert p.returncode == 0, p.stderr
    return [(Path(h["path"]).name, h["text"]) for h in json.loads(p.stdout)["results"]]


def test_index_on_ray_equals_local(cluster, folder, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    a = run(["index", str(folder), "--index", "r", "--json"], local)
    b = run(["index", str(folder), "--index", "r", "--json", "--ray", cluster], remote)
    assert a.returncode == b.returncode == 1, b.stderr[-2000:]  # broken.pdf named, the rest indexed
    assert "broken.pdf" in a.stderr and "broken.pdf" in b.stderr and "Ray:" in b.stderr
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert (ra["indexed"], ra["chunks"], len(ra["failed"])) == (rb["indexed"], rb["chunks"], 1)
    for q in ["What happened to the apples?", "When are filters replaced?", "leave policy"]:
        assert _search(local, q) == _search(remote, q)
    again = run(["index", str(folder), "--index", "r", "--json", "--ray", cluster], remote)
    assert json.loads(again.stdout)["unchanged"] == ra["indexed"]


def test_without_ray_installed_the_flag_says_how_to_install_it(monkeypatch):
    from lcdoc.cluster import connect
    from lcdoc.errors import UsageError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r'pip install "lcdoc\[ray\]"'):
        connect("auto")
