"""A real `lcdoc serve` process: resident documents, the fallback when it dies, chat over stdin."""

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from tests.conftest import FILLER, LCDOC

pytestmark = pytest.mark.slow
QUESTION = "Who tests the emergency generator?"


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "LCDOC_SOCKET": str(tmp_path / "run" / "serve.sock"),
            "LCDOC_INDEX_DIR": str(tmp_path / "indexes"), "LCDOC_ANSWER_TOKENS": "48"}


@pytest.fixture()
def doc(tmp_path):
    path = tmp_path / "station.txt"
    body = " ".join(FILLER[i % 5] for i in range(40))
    path.write_text("The emergency generator is tested every Monday by the duty engineer, "
                    "Margit Olander. " + body + "\n")
    return path


def start(env, *args, timeout=120):
    log = open(os.path.join(os.path.dirname(env["LCDOC_SOCKET"]) + ".log"), "w+")
    proc = subprocess.Popen(LCDOC + ["serve", *args], stderr=log, stdout=log, env=env)
    t0 = time.time()
    while time.time() - t0 < timeout:
        log.seek(0)
        if "ready" in log.read():
            return proc
        assert proc.poll() is None, open(log.name).read()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("lcdoc serve did not become ready")


def ask(env, *args, check=True):
    r = subprocess.run(LCDOC + ["ask", *args, "--json"], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL)
    assert not check or r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.returncode == 0 else r


@pytest.fixture()
def server(env):
    proc = start(env)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_socket_is_the_users_alone(server, env):
    sock = env["LCDOC_SOCKET"]
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700


def test_a_follow_up_from_another_process_is_answered_from_the_resident_document(server, env, doc):
    first = ask(env, QUESTION, str(doc))
    t0 = time.perf_counter()
    second = ask(env, "What is tested every Monday?", str(doc))
    wall = time.perf_counter() - t0
    assert first["server"] and second["server"]
    assert second["tokens"]["restored"] >= 0.9 * second["tokens"]["prompt"]
    assert first["timings"]["prefill_s"] >= 10 * second["timings"]["prefill_s"]
    # The in-process alternative pays model load and the whole prefill again.
    t0 = time.perf_counter()
    alone = ask(env, "What is tested every Monday?", str(doc), "--no-server")
    assert not alone["server"] and wall <= (time.perf_counter() - t0) / 2


def test_a_server_killed_with_sigkill_leaves_ask_answering_in_process(server, env, doc):
    server.send_signal(signal.SIGKILL)
    server.wait()
    assert os.path.exists(env["LCDOC_SOCKET"])  # a stale socket: the client must see through it
    ans = ask(env, QUESTION, str(doc))
    assert not ans["server"] and ans["answer"].strip()


def test_sigterm_stops_the_server_cleanly_and_removes_its_socket(server, env):
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    assert not os.path.exists(env["LCDOC_SOCKET"])


def test_a_server_with_another_context_is_not_used(server, env, doc):
    ans = ask(env, QUESTION, str(doc), "--ctx", "4096")
    assert not ans["server"] and ans["tokens"]["context"] == 4096


def test_errors_come_back_with_their_message_and_exit_code(server, env, tmp_path):
    r = ask(env, QUESTION, str(tmp_path / "missing.txt"), check=False)
    assert r.returncode == 1 and "missing.txt" in r.stderr and "no such file" in r.stderr
    r = ask(env, QUESTION, "--index", "nope", check=False)
    assert r.returncode == 1 and "no such index" in r.stderr


def test_search_through_the_server_equals_in_process(server, env, corpus):
    subprocess.run(LCDOC + ["index", str(corpus), "--index", "c"], env=env, check=True,
                   capture_output=True)
    cmd = LCDOC + ["search", "when is the generator tested", "--index", "c", "--json"]
    remote = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True).stdout)
    local = json.loads(subprocess.run(cmd + ["--no-server"], env=env, capture_output=True,
                                      text=True).stdout)
    assert [(h["path"], h["page"]) for h in remote["results"]] == \
        [(h["path"], h["page"]) for h in local["results"]]
    assert "report.pdf" in remote["results"][0]["path"]
    assert remote["server"] is True and local["server"] is False


def test_chat_from_a_pipe_answers_each_line_and_reuses_the_document(env, doc):
    questions = f"{QUESTION}\n\nAnd on which day?\n"
    r = subprocess.run(LCDOC + ["chat", str(doc), "--json", "--no-server"], input=questions,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    turns = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(turns) == 2 and all(t["answer"].strip() for t in turns)
    # The follow-up carries the first turn and prefills only what is new.
    assert turns[1]["tokens"]["prompt"] > turns[0]["tokens"]["prompt"]
    assert turns[1]["tokens"]["restored"] >= 0.8 * turns[0]["tokens"]["prompt"]


def test_summarize_through_the_server_equals_in_process(server, env, tmp_path):
    src = tmp_path / "notes"
    src.mkdir()
    (src / "ferry.txt").write_text("The ferry to the island leaves at noon and carries forty cars. "
                                   + FILLER[1])
    (src / "bakery.txt").write_text("The bakery on Quay Street bakes rye bread from six. " + FILLER[2])
    (src / "broken.pdf").write_bytes(b"%PDF-1.4 not really")

    def run(*extra):
        return subprocess.run(LCDOC + ["summarize", str(src), "--json", "--max-words", "25",
                                       "--index-dir", str(tmp_path / f"idx{len(extra)}"), *extra],
                              capture_output=True, text=True, env=env)

    remote, local = run(), run("--no-server")
    assert remote.returncode == local.returncode == 1  # the broken PDF, named by both
    assert "broken.pdf" in remote.stderr and "by the running server" in remote.stderr
    summaries = [{json.loads(x)["path"]: json.loads(x)["summary"] for x in r.stdout.splitlines()}
                 for r in (remote, local)]
    assert len(summaries[0]) == 2 and summaries[0] == summaries[1]
