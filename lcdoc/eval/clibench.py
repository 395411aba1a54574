"""Benchmarks through the installed `lcdoc` console script, each command a separate process.

    python -m lcdoc.eval.clibench serve --model M --ctx 131072 --doc-tokens 100000
    python -m lcdoc.eval.clibench summarize --model M --docs 16 --parallel 1,8 --ctx 32768
    python -m lcdoc.eval.clibench startup /usr/share/doc/r-doc-pdf/manual/R-intro.pdf
    python -m lcdoc.eval.clibench chat --model M --ctx 131072 --doc-tokens 87000 --turns 3
    python -m lcdoc.eval.clibench longchat DOC --ctx 4096 --turns 30

`serve`: a cold question in-process (model load and full prefill), then `lcdoc serve` started and
the same document asked through it (first question, then follow-ups), the server killed with
SIGKILL and one more question that must fall back to in-process work. `summarize`: documents per
hour of `lcdoc summarize --parallel N` for each N, side by side in one run. `startup`: `lcdoc
index`, `search` and `ask`'s retrieval step on a manual, with PyTorch embedding (lcdoc 0.1's path,
`LCDOC_EMBED_RUNTIME=torch`), ONNX Runtime at fp32, and the default (int8 on a machine without a
GPU), side by side in one run. `chat`: a piped `lcdoc chat` through `lcdoc serve`, then `lcdoc ask
-c` from new processes, then the same chat in-process (`--no-server`), each turn's time to first
token, prompt and restored tokens. `longchat`: a piped chat of many turns at a small context
(the conversation folded as it outgrows it), each turn's prompt, prefilled tokens and prefill
time. Tables are printed as
Markdown for docs/benchmarks.md, with the machine and commands; --json writes the raw rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("harbour council ledger audit pump station bridge orchard festival survey library river "
         "committee budget filter schedule volunteer reading programme frost cider press road "
         "repair footpath railway engineer generator monday logbook turbidity sample buoy dawn "
         "carpentry workshop shelves attendance weekend county agreement control room").split()


def lcdoc(*args: str) -> list[str]:
    """The console script next to this Python, as a user runs it (LCDOC_BENCH_EXE: another
    one, to measure two versions side by side in one run)."""
    exe = os.environ.get("LCDOC_BENCH_EXE") or shutil.which(
        "lcdoc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not exe:
        raise SystemExit("the lcdoc console script is not installed")
    return [exe, *args]


def write_document(path: Path, n_tokens: int, model: str | None, fact: str, seed: int = 0) -> int:
    """Random prose of about n_tokens model tokens with one fact near the start; its token count."""
    from lcdoc.engine.llm import Tokenizer, resolve_model

    rng = random.Random(seed)
    tok = Tokenizer(resolve_model(model))
    sentences, total = [fact], tok.count(fact)
    while total < n_tokens:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + ". "
        sentences.append(s)
        total += tok.count(s)
    path.write_text("".join(sentences) + "\n")
    return total


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, dict, str]:
    """(wall seconds, the --json object printed, stderr) of one command."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return wall, json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def start_server(args: list[str], env: dict, log: Path, timeout: float = 600) -> subprocess.Popen:
    """`lcdoc serve ARGS` in the background; returns once it printed its ready line."""
    f = open(log, "w")
    proc = subprocess.Popen(lcdoc("serve", *args), stderr=f, stdout=f, env=env,
                            start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if "ready" in log.read_text():
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"lcdoc serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("lcdoc serve did not become ready")


def bench_serve(a: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-servebench-"))
    env = {**os.environ, "LCDOC_SOCKET": str(work / "serve.sock"),
           "LCDOC_INDEX_DIR": str(work / "indexes")}
    doc = work / "report.txt"
    n = write_document(doc, a.doc_tokens, a.model, "The access code for the north gate is PELICAN-42. ")
    print(f"document: {n} tokens", file=sys.stderr, flush=True)
    model = ["--model", a.model] if a.model else []
    ask = lcdoc("ask", "What is the access code for the north gate?", str(doc), "--json",
                "--ctx", str(a.ctx), *model)
    rows = []

    def row(name: str, wall: float, d: dict) -> None:
        t = d["timings"]
        rows.append({"run": name, "server": d.get("server", False), "wall_s": round(wall, 2),
                     "ttft_s": round(t["prefill_s"], 3), "prompt": d["tokens"]["prompt"],
                     "restored": d["tokens"].get("restored", 0), "route": d["route"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    wall, d, _ = timed(ask + ["--no-server"], env)
    row("in-process, cold (new process, model load + prefill)", wall, d)
    t0 = time.perf_counter()
    server = start_server(["--ctx", str(a.ctx), *model], env, work / "serve.log")
    print(f"server ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    try:
        wall, d, _ = timed(ask, env)
        row("server, first question", wall, d)
        for i in range(a.followups):
            q = ["What is the code for the north gate?", "Which gate has the code PELICAN-42?",
                 "Repeat the access code of the north gate."][i % 3]
            wall, d, _ = timed(lcdoc("ask", q, str(doc), "--json", "--ctx", str(a.ctx), *model), env)
            row(f"server, follow-up {i + 1} (new process)", wall, d)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    wall, d, _ = timed(ask, env)
    row("after SIGKILL of the server (falls back in-process)", wall, d)
    shutil.rmtree(work, ignore_errors=True)
    return rows


CHAT_QUESTIONS = ["What is the access code for the north gate?", "Which gate was that for?",
                  "Repeat the code once more.", "Is the code written in capitals?",
                  "Who would need such a code?"]


def _chat_rows(how: str, stdout: str, wall: float) -> list[dict]:
    rows = []
    for line in stdout.strip().splitlines():
        d = json.loads(line)
        rows.append({"run": how, "turn": d["turn"], "server": d["server"],
                     "ttft_s": round(d["timings"]["prefill_s"], 3),
                     "prompt": d["tokens"]["prompt"], "restored": d["tokens"].get("restored", 0),
                     "context": d["tokens"]["context"], "wall_s": round(wall, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def bench_chat(a: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-chatbench-"))
    env = {**os.environ, "LCDOC_SOCKET": str(work / "serve.sock"),
           "LCDOC_INDEX_DIR": str(work / "indexes"),
           "LCDOC_HISTORY_DB": str(work / "history.sqlite"), "LCDOC_ANSWER_TOKENS": "16"}
    doc = work / "report.txt"
    n = write_document(doc, a.doc_tokens, a.model, "The access code for the north gate is PELICAN-42. ")
    print(f"document: {n} tokens", file=sys.stderr, flush=True)
    model = ["--model", a.model] if a.model else []
    chat = lcdoc("chat", str(doc), "--mode", "stuff", "--json", "--ctx", str(a.ctx), *model)
    questions = "\n".join(CHAT_QUESTIONS[: a.turns]) + "\n"
    rows = []
    server = start_server(["--ctx", str(a.ctx), *model], env, work / "serve.log")
    try:
        t0 = time.perf_counter()
        p = subprocess.run(chat, input=questions, capture_output=True, text=True, env=env)
        rows += _chat_rows("chat through lcdoc serve", p.stdout, time.perf_counter() - t0)
        for q in ("And the south gate?", "Which gate again?"):
            t0 = time.perf_counter()
            p = subprocess.run(lcdoc("ask", "-c", q, "--json", "--ctx", str(a.ctx), *model),
                               capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
            rows += _chat_rows("ask -c, new process, server", p.stdout, time.perf_counter() - t0)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    t0 = time.perf_counter()
    p = subprocess.run(chat + ["--no-server"], input=questions, capture_output=True, text=True,
                       env=env)
    rows += _chat_rows("chat in-process (--no-server)", p.stdout, time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def bench_longchat(a: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-longchat-"))
    env = {**os.environ, "LCDOC_INDEX_DIR": str(work / "indexes"),
           "LCDOC_HISTORY_DB": str(work / "history.sqlite")}
    base = ["What is this document about?", "What does it say about patents?",
            "And about trademarks?", "Can I redistribute the work?",
            "What must I include when I redistribute?", "What is a Contribution?",
            "Who is a Contributor?", "What is the warranty?", "What about liability?",
            "Can I charge a fee for support?"]
    questions = [base[i % len(base)] if i < len(base) else base[i % len(base)][:-1] + " again?"
                 for i in range(a.turns)]
    model = ["--model", a.model] if a.model else []
    t0 = time.perf_counter()
    p = subprocess.run(lcdoc("chat", str(a.doc), "--json", "--no-server", "--ctx", str(a.ctx),
                             "--max-tokens", str(a.answer_tokens), "--explain", *model),
                       input="\n".join(questions) + "\n", capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    folds = [ln for ln in p.stderr.splitlines() if "folded into a summary" in ln]
    rows = []
    for line in p.stdout.strip().splitlines():
        d = json.loads(line)
        t = d["tokens"]
        rows.append({"turn": d["turn"], "route": d["route"], "prompt": t["prompt"],
                     "restored": t["restored"], "prefilled": t["prompt"] - t["restored"],
                     "prefill_s": round(d["timings"]["prefill_s"], 2),
                     "fits": t["prompt"] <= t["context"]})
    print(f"{len(rows)} of {a.turns} answered in {wall:.0f} s; {len(folds)} turn(s) carried a "
          f"folded summary", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def bench_summarize(a: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-sumbench-"))
    env = {**os.environ, "LCDOC_SOCKET": str(work / "none.sock"),
           "LCDOC_INDEX_DIR": str(work / "indexes")}
    folder = work / "docs"
    folder.mkdir()
    rng = random.Random(1)
    for i in range(a.docs):
        write_document(folder / f"report-{i:03d}.txt", rng.randint(a.min_tokens, a.max_tokens),
                       a.model, f"Report {i} concerns the {rng.choice(WORDS)} of district {i}. ", seed=i)
    model = ["--model", a.model] if a.model else []
    rows = []
    for n in [int(x) for x in a.parallel.split(",")]:
        cache = work / f"indexes-{n}"  # a fresh summary cache per run: nothing is reused
        cmd = lcdoc("summarize", str(folder), "--json", "--parallel", str(n), "--ctx", str(a.ctx),
                    "--max-words", str(a.max_words), "--index-dir", str(cache), *model)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        model_s = sum(x["seconds"] for x in lines)
        rows.append({"parallel": n, "documents": len(lines), "exit": p.returncode,
                     "wall_s": round(wall, 1), "docs_per_hour": round(len(lines) / wall * 3600),
                     "summary_s": round(model_s, 1),
                     "docs_per_hour_model": round(len(lines) / model_s * 3600) if model_s else 0})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    base = rows[0]
    for r in rows:
        r["ratio_wall"] = round(r["docs_per_hour"] / base["docs_per_hour"], 2)
        r["ratio_model"] = round(r["docs_per_hour_model"] / max(1, base["docs_per_hour_model"]), 2)
    shutil.rmtree(work, ignore_errors=True)
    return rows


STARTUP_QUERIES = ("how do I read a data file into a data frame",
                   "what does the apply family of functions do",
                   "how are missing values represented")


def bench_startup(a: argparse.Namespace) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="lcdoc-startup-"))
    configs = {"PyTorch (LCDOC_EMBED_RUNTIME=torch, fp32)": {"LCDOC_EMBED_RUNTIME": "torch",
                                                             "LCDOC_EMBED_PRECISION": "fp32"},
               "ONNX Runtime, fp32 (LCDOC_EMBED_PRECISION=fp32)": {"LCDOC_EMBED_PRECISION": "fp32"},
               "default (ONNX Runtime, int8 without a GPU)": {}}
    rows = []
    # The export is made once per model (at the first index): timed apart, in a fresh cache.
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "LCDOC_INDEX_DIR": str(work / "first"),
           "LCDOC_SOCKET": str(work / "none.sock"), "LCDOC_ANSWER_TOKENS": "1"}
    t0 = time.perf_counter()
    subprocess.run(lcdoc("index", *a.paths, "--index", "m", "--quiet"), env=env, check=True,
                   capture_output=True)
    first = time.perf_counter() - t0
    for r in range(a.repeat):
        for name, extra in configs.items():
            e = {**env, **extra, "LCDOC_INDEX_DIR": str(work / f"idx-{len(rows)}")}
            t0 = time.perf_counter()
            p = subprocess.run(lcdoc("index", *a.paths, "--index", "m", "--json", "--quiet"), env=e,
                               capture_output=True, text=True)
            index_s = time.perf_counter() - t0
            if p.returncode:
                raise SystemExit(f"lcdoc index exited {p.returncode}: {p.stderr[-2000:]}")
            chunks = json.loads(p.stdout.strip().splitlines()[-1]).get("chunks")
            search_s, retrieve_s = [], []
            for q in STARTUP_QUERIES:
                wall, _, _ = timed(lcdoc("search", q, "--index", "m", "--json"), e)
                search_s.append(wall)
                _, d, _ = timed(lcdoc("ask", q, "--index", "m", "--json", "--mode", "rag",
                                      "--no-server"), e)
                retrieve_s.append(d["timings"]["retrieve_s"])
            rows.append({"run": r + 1, "embedding": name, "chunks": chunks,
                         "index_s": round(index_s, 2),
                         "search_wall_s": round(sorted(search_s)[len(search_s) // 2], 2),
                         "ask_retrieve_s": round(sorted(retrieve_s)[len(retrieve_s) // 2], 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"first index with a fresh export cache (export included): {first:.1f} s", file=sys.stderr)
    rows.append({"run": "-", "embedding": "default, first run ever (ONNX export made)",
                 "chunks": rows[-1]["chunks"], "index_s": round(first, 2), "search_wall_s": "",
                 "ask_retrieve_s": ""})
    shutil.rmtree(work, ignore_errors=True)
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--model")
    s.add_argument("--ctx", type=int, default=8192)
    s.add_argument("--doc-tokens", type=int, default=6000)
    s.add_argument("--followups", type=int, default=3)
    m = sub.add_parser("summarize")
    m.add_argument("--model")
    m.add_argument("--docs", type=int, default=16)
    m.add_argument("--min-tokens", type=int, default=2000)
    m.add_argument("--max-tokens", type=int, default=3000)
    m.add_argument("--parallel", default="1,8")
    m.add_argument("--ctx", type=int, default=32768)
    m.add_argument("--max-words", type=int, default=150)
    u = sub.add_parser("startup")
    u.add_argument("paths", nargs="+")
    u.add_argument("--repeat", type=int, default=2)
    c = sub.add_parser("chat")
    c.add_argument("--model")
    c.add_argument("--ctx", type=int, default=8192)
    c.add_argument("--doc-tokens", type=int, default=6000)
    c.add_argument("--turns", type=int, default=3)
    lc = sub.add_parser("longchat")
    lc.add_argument("doc", type=Path)
    lc.add_argument("--model")
    lc.add_argument("--ctx", type=int, default=4096)
    lc.add_argument("--turns", type=int, default=30)
    lc.add_argument("--answer-tokens", type=int, default=48)
    for p in (s, m, u, c, lc):
        p.add_argument("--json", type=Path, help="Write the rows here too.")
    a = ap.parse_args(argv)
    rows = {"serve": bench_serve, "summarize": bench_summarize, "startup": bench_startup,
            "chat": bench_chat, "longchat": bench_longchat}[a.what](a)
    from lcdoc.eval.bench import machine

    print(f"machine: {machine()}\ncommand: python -m lcdoc.eval.clibench "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
