"""kill -9 at random points of `lcdoc index`, then check the index every time.

    python -m lcdoc.eval.killtest CORPUS... [--kills 20] [--seed 0]

A fresh build, and later updates of changed files, are killed with SIGKILL at random moments.
After every kill the index must open, pass SQLite's `PRAGMA integrity_check` and FTS5's
`integrity-check`, and answer a search; at the end the resumed index must equal a clean build
of the same files (documents, their hashes, chunk texts). Exit 1 on the first failed check.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def lcdoc(*args: str) -> list[str]:
    return [sys.executable, "-m", "lcdoc", *args]


def check_index(folder: Path) -> str | None:
    """Why this index is not whole, or None."""
    from lcdoc.index import Index

    db = folder / "index.sqlite"
    if not db.exists():
        return None  # killed before it was created: nothing to check
    con = sqlite3.connect(db)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            return f"PRAGMA integrity_check: {ok}"
        con.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')")
    except sqlite3.DatabaseError as e:
        return f"integrity check failed: {e}"
    finally:
        con.close()
    try:
        with Index.open(str(folder)) as idx:
            if idx.store.counts()["chunks"]:
                idx.search("the", k=3, mode="bm25")
                idx.search("the", k=3, mode="hybrid")
    except Exception as e:  # noqa: BLE001 - any failure to open or search is the finding
        return f"does not open or search: {type(e).__name__}: {e}"
    return None


def snapshot(folder: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """path -> (sha256, chunk texts): what a clean build and a resumed one must agree on."""
    con = sqlite3.connect(folder / "index.sqlite")
    try:
        rows = con.execute("SELECT d.path, d.sha256, c.text FROM documents d JOIN chunks c "
                           "ON c.doc_id = d.id ORDER BY d.path, c.ordinal").fetchall()
    finally:
        con.close()
    out: dict[str, tuple[str, list[str]]] = {}
    for path, sha, text in rows:
        out.setdefault(path, (sha, []))[1].append(text)
    return {p: (sha, tuple(texts)) for p, (sha, texts) in out.items()}


def run(corpus: list[Path], kills: int, seed: int, log=print) -> bool:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="lcdoc-killtest-"))
    src = work / "src"
    for i, c in enumerate(corpus):
        dest = src / f"{i}-{c.name}"
        shutil.copytree(c, dest) if c.is_dir() else (dest.parent.mkdir(parents=True, exist_ok=True),
                                                     shutil.copy2(c, dest))
    env = {**os.environ, "LCDOC_INDEX_DIR": str(work / "indexes"), "LCDOC_NO_SERVER": "1"}
    t0 = time.perf_counter()
    subprocess.run(lcdoc("index", str(src), "--index", "clean", "-q"), env=env, check=True,
                   capture_output=True)
    clean_s = time.perf_counter() - t0
    log(f"clean build: {clean_s:.1f} s")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    folder = work / "indexes" / "killed"
    ok = True
    for k in range(kills):
        if k == kills // 2:  # the second half kills updates of changed files
            for p in rng.sample(files, max(1, len(files) // 3)):
                with open(p, "a") as f:
                    f.write(f"\nA line added before kill {k}: the survey resumes in spring.\n")
            subprocess.run(lcdoc("index", str(src), "--index", "clean", "-q"), env=env,
                           check=True, capture_output=True)
        proc = subprocess.Popen(lcdoc("index", str(src), "--index", "killed", "-q"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.2, clean_s)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        why = check_index(folder)
        log(f"kill {k + 1}/{kills} after {delay:.1f} s: {'ok' if why is None else why}")
        if why is not None:
            ok = False
            break
    if ok:
        subprocess.run(lcdoc("index", str(src), "--index", "killed", "-q"), env=env, check=True,
                       capture_output=True)
        same = snapshot(folder) == snapshot(work / "indexes" / "clean")
        log(f"resumed index {'equals' if same else 'DIFFERS FROM'} a clean build")
        ok = same and check_index(folder) is None
    shutil.rmtree(work, ignore_errors=True)
    return ok


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="+", type=Path)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    sys.exit(0 if run(a.corpus, a.kills, a.seed, log=lambda m: print(m, flush=True)) else 1)


if __name__ == "__main__":
    main()
