"""`lcdoc calibrate` on the packaged SmolLM2: a stored profile that the router and `plan` read;
quoted evidence in `ask --json` over a real PDF."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import FILLER, fresh_cache, make_pdf, run_lcdoc

pytestmark = pytest.mark.slow


def lcdoc(args, env):
    return run_lcdoc(args, env, timeout=900)


def test_calibration_is_stored_per_model_and_plan_and_used_by_router_and_plan(tmp_path):
    env = {"XDG_CACHE_HOME": str(fresh_cache(tmp_path)), "LCDOC_INDEX_DIR": str(tmp_path / "idx"),
           "LCDOC_NO_SERVER": "1"}
    before = lcdoc(["plan", "--ctx", "2048"], env)
    assert "not calibrated" in before.stdout
    p = lcdoc(["calibrate", "--ctx", "2048", "--lengths", "384,768", "--depths", "20,80",
               "--full", "--json"], env)
    assert p.returncode == 0, p.stderr[-2000:]
    prof = json.loads(p.stdout)
    assert set(prof["grid"]) == {"384", "768"} and len(prof["trials"]) == 4
    assert prof["effective_length"] in (0, 384, 768)
    assert prof["path"].startswith(str(tmp_path / "cache")) and os.path.exists(prof["path"])
    for t in prof["trials"]:  # paraphrased: the question does not repeat the fact's key words
        assert t["found"] == (t["expected"].lower() in t["answer"].lower())
    after = lcdoc(["plan", "--ctx", "2048", "--json"], env)
    eff = json.loads(after.stdout)["effective"]
    assert eff == {"calibrated": True, "stuff_limit": prof["effective_length"],
                   "grid": prof["grid"], "measured_at": prof["measured_at"]}
    other = lcdoc(["plan", "--ctx", "4096"], env)  # another plan: another profile (none yet)
    assert "not calibrated" in other.stdout
    doc = tmp_path / "note.txt"
    doc.write_text("The ferry to the island leaves at seven. " + " ".join(FILLER))
    a = lcdoc(["ask", "When does the ferry leave?", str(doc), "--ctx", "2048", "--json"],
              {**env, "LCDOC_ANSWER_TOKENS": "24"})
    assert a.returncode == 0, a.stderr[-2000:]
    assert any(r.startswith("calibrated: effective length") for r in json.loads(a.stdout)["reasons"])


def test_ask_over_a_pdf_quotes_its_sources_and_cites_only_them(tmp_path):
    pages = [" ".join(FILLER[(i + j) % 5] for j in range(3)) for i in range(4)]
    pages[2] += " The emergency generator is tested on the first Monday of every month."
    pdf = make_pdf(tmp_path / "report.pdf", pages, title="Annual report")
    env = {"XDG_CACHE_HOME": str(fresh_cache(tmp_path)), "LCDOC_INDEX_DIR": str(tmp_path / "idx"),
           "LCDOC_NO_SERVER": "1", "LCDOC_ANSWER_TOKENS": "48"}
    from lcdoc.ingest import load_path

    text = " ".join(load_path(pdf).text.split())
    for mode in ("rag", "stuff"):
        p = lcdoc(["ask", "When is the emergency generator tested?", str(pdf), "--mode", mode,
                   "--json"], env)
        assert p.returncode == 0, p.stderr[-2000:]
        d = json.loads(p.stdout)
        assert d["sources"] and isinstance(d["supported"], bool)
        assert all({"n", "quote"} <= set(s) for s in d["sources"])
        numbers = {s["n"] for s in d["sources"]}
        assert {int(n) for n in re.findall(r"\[(\d+)\]", d["answer"])} <= numbers
        quotes = [s["quote"].strip("…") for s in d["sources"] if s["quote"]]
        assert quotes and all(q in text for q in quotes)  # sentences of the PDF, word for word


def test_a_piped_pdf_keeps_its_pages_when_retrieved(tmp_path):
    pages = [" ".join(FILLER[(i + j) % 5] for j in range(3)) for i in range(5)]
    pages[3] += " The lighthouse lamp was replaced with an LED unit in March."
    pdf = make_pdf(tmp_path / "log.pdf", pages, title="Harbour log")
    env = {**os.environ, "XDG_CACHE_HOME": str(fresh_cache(tmp_path)),
           "LCDOC_INDEX_DIR": str(tmp_path / "idx"), "LCDOC_NO_SERVER": "1",
           "LCDOC_ANSWER_TOKENS": "32"}
    p = subprocess.run([sys.executable, "-m", "lcdoc", "ask", "When was the lighthouse lamp "
                        "replaced?", "-", "--mode", "rag", "--json"], input=pdf.read_bytes(),
                       capture_output=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(p.stdout)
    assert d["route"] == "rag" and d["sources"]
    assert all(s["path"] == "<stdin>" and s["page"] for s in d["sources"])
    assert any(s["page"] <= 4 <= s["page_end"] and "lighthouse" in s["quote"] for s in d["sources"])
