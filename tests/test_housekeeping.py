"""Housekeeping through the console script: list and drop indexes, see and clear caches,
--version and -h."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import fresh_cache, run_lcdoc



@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "LCDOC_INDEX_DIR": str(tmp_path / "indexes"),
            "LCDOC_HISTORY_DB": str(tmp_path / "history.sqlite"),
            "XDG_CACHE_HOME": str(fresh_cache(tmp_path))}


def run(env, *args, **kw):
    return run_lcdoc(list(args), env, **kw)


def test_version_and_short_help(env):
    assert run(env, "--version").stdout.startswith("lcdoc ")
    assert run(env, "-V").stdout == run(env, "--version").stdout
    assert "Usage" in run(env, "-h").stdout and "indexes" in run(env, "-h").stdout


@pytest.mark.slow
def test_indexes_lists_and_drop_removes_only_an_index(env, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lamp oil is stored in the blue shed behind the mill.\n")
    assert run(env, "index", str(docs), "--index", "kb").returncode == 0
    listed = json.loads(run(env, "indexes", "--json").stdout)
    assert [(i["name"], i["documents"]) for i in listed] == [("kb", 1)]
    assert listed[0]["chunks"] >= 1 and listed[0]["bytes"] > 0 and listed[0]["embed_model"]
    assert "kb" in run(env, "indexes").stdout

    keep = tmp_path / "indexes" / "notes"  # a folder that is not an index is never removed
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    r = run(env, "drop", "notes", "--yes")
    assert r.returncode == 1 and "no such index" in r.stderr and (keep / "mine.txt").exists()
    r = run(env, "drop", "kb")  # not a terminal: asks for --yes rather than guessing
    assert r.returncode == 2 and "--yes" in r.stderr
    assert (tmp_path / "indexes" / "kb").exists()
    assert run(env, "drop", "kb", "--yes").returncode == 0
    assert not (tmp_path / "indexes" / "kb").exists()
    assert json.loads(run(env, "indexes", "--json").stdout) == []


def test_cache_lists_each_kind_and_clears_one(env, tmp_path):
    prompt = tmp_path / "indexes" / ".prompt-cache"
    prompt.mkdir(parents=True)
    (prompt / "x.kvstate").write_bytes(b"0" * 4096)
    calib = tmp_path / "cache" / "lcdoc" / "calibration"
    calib.mkdir(parents=True)
    (calib / "p.json").write_text("{}")
    sizes = json.loads(run(env, "cache", "--json").stdout)
    assert set(sizes) == {"prompt", "onnx", "calibration", "ocr", "history"}
    assert sizes["prompt"]["bytes"] == 4096 and sizes["prompt"]["files"] == 1
    assert sizes["calibration"]["files"] == 1
    r = run(env, "cache", "clear", "prompt")
    assert r.returncode == 0 and "cleared prompt" in r.stderr
    assert not prompt.exists() and (calib / "p.json").exists()
    assert run(env, "cache", "clear", "everything").returncode == 2
