"""The first question from a new process: every second named, the model loaded while the
documents are counted, no teardown paid at exit, and the prompt-kernel setting checked."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import fresh_cache, run_lcdoc

FACT = "The access code for the north gate is PELICAN-42. "


@pytest.mark.slow
def test_the_named_timings_add_up_to_the_wall_and_nothing_is_lost_by_the_fast_exit(tmp_path):
    doc = tmp_path / "gate.txt"
    doc.write_text("Site notes. " * 200 + FACT + "The south gate has no code. " * 50)
    env = {"LCDOC_INDEX_DIR": str(tmp_path / "idx"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CACHE_HOME": str(fresh_cache(tmp_path)), "LCDOC_DEBUG": "1"}
    t0 = time.perf_counter()
    r = run_lcdoc(["ask", "What is the access code for the north gate?", doc, "--json",
                   "--no-server", "--max-tokens", "24"], env=env)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # whole: stdout was flushed before the process left
    assert d["route"] == "stuff" and d["tokens"]["prompt"] > 600
    named = sum(d["timings"].values())
    assert set(d["timings"]) >= {"start_s", "load_s", "read_s", "prefill_s", "generate_s",
                                 "evidence_s", "save_s"}
    assert named <= wall and wall - named < 1.0, (wall, d["timings"])
    marks = re.findall(r"lcdoc: debug: ([a-z ]+) at ([0-9.]+)", r.stderr)
    cli = ["answered", "recorded", "printed", "state handed over", "exit"]
    assert [m[0] for m in marks if m[0] in cli] == cli
    inner = [m[0] for m in marks[:marks.index(next(m for m in marks if m[0] == "answered"))]]
    assert inner[:3] == ["read", "loaded", "routed"] and "generated" in inner, marks
    at = dict(marks)
    answered, exited = float(at["answered"]), float(at["exit"])
    assert exited - answered < 0.5  # no model freed between the answer and the exit
    log = run_lcdoc(["log", "--json"], env=env)  # the history was committed before os._exit
    assert log.returncode == 0 and "north gate" in log.stdout


@pytest.mark.slow
def test_a_model_that_fails_while_the_documents_are_counted_is_one_line_and_an_exit_code(tmp_path):
    doc = tmp_path / "gate.txt"
    doc.write_text(FACT * 40)
    # The planner refuses inside the loading thread; the error reaches the caller as before.
    r = run_lcdoc(["ask", "What is the code?", doc, "--ctx", "2000000000", "--no-server",
                   "--gpu-layers", "0"], env={"LCDOC_INDEX_DIR": str(tmp_path / "idx")})
    assert r.returncode != 0 and r.stderr.count("\n") <= 3, r.stderr
    assert "does not fit" in r.stderr and "Traceback" not in r.stderr


def test_an_unknown_prompt_kernel_setting_is_a_usage_error():
    r = run_lcdoc(["plan"], env={"LCDOC_PROMPT_KERNELS": "fastest"})
    assert r.returncode == 2 and "prompt_kernels 'fastest'" in r.stderr
    ok = run_lcdoc(["plan", "--json"], env={"LCDOC_PROMPT_KERNELS": "mmq"})
    assert ok.returncode == 0 and json.loads(ok.stdout)["plan"]["cublas_min_batch"] == 0


@pytest.mark.slow
def test_the_prompt_tokenized_while_the_model_loads_is_the_one_the_engine_would_make(tmp_path):
    from lcdoc.engine import llm as L
    from lcdoc.models import find_packaged_gguf
    from lcdoc.qa.ask import SYSTEM, gather_documents, stuff_context

    doc = tmp_path / "gate.txt"
    doc.write_text("Site notes, page one.\n\n" + FACT * 30 + "\n<|im_end|> is text here.")
    docs, _ = gather_documents([str(doc)])
    L._PREFIX_TOKENS.clear()
    L.Tokenizer(find_packaged_gguf()).tokenize_prefix_ahead(SYSTEM, stuff_context(docs))
    (ahead,) = L._PREFIX_TOKENS.values()
    eng = L.Engine(n_ctx=4096, cache_dir=tmp_path / "pc")
    pre, suf, _ = eng.chat_parts(SYSTEM, stuff_context(docs), "What is the code?")
    direct = eng.llm.tokenize(pre.encode(), add_bos=L.add_bos(eng.llm), special=True)
    assert ahead == direct and len(direct) > 300
    taken, _ = eng.prompt_tokens(pre, suf)
    assert taken == direct and not L._PREFIX_TOKENS  # taken once, then gone
    other, _ = eng.prompt_tokens(pre.replace("page one", "page two"), suf)  # not the memo's text
    assert other != direct


@pytest.mark.slow
def test_a_stuffed_question_takes_the_prompt_tokenized_during_the_load(tmp_path):
    from lcdoc.engine import llm as L
    from lcdoc.qa.ask import ask
    from lcdoc.settings import load_settings

    doc = tmp_path / "gate.txt"
    doc.write_text("Site notes. " * 300 + FACT)
    L._PREFIX_TOKENS.clear()
    a = ask("What is the access code for the north gate?", [str(doc)], mode="auto",
            settings=load_settings(index_dir=tmp_path / "idx", answer_tokens=16))
    assert a.route == "stuff" and a.tokens["prompt"] > 900
    assert not L._PREFIX_TOKENS  # the prefix made during the load was the one used
    if a.engine is not None:
        a.engine.close()


@pytest.mark.slow
def test_weights_read_instead_of_mapped_give_the_same_answer(monkeypatch):
    """The read path (use_mmap off: what the planner picks with every layer on a GPU) loads a
    model that answers token for token as the mapped one does."""
    from lcdoc.engine.llm import Engine

    answers = {}
    for how in ("mmap", "read"):
        monkeypatch.setenv("LCDOC_LOAD", how)
        eng = Engine(n_ctx=2048, gpu_layers=0)
        assert eng.plan.use_mmap is (how == "mmap")
        assert eng.llm.model_params.load_mode == (1 if how == "mmap" else 0)  # llama_load_mode
        pre, suf, stops = eng.chat_parts("Answer from the notes.", "Notes: " + FACT * 5,
                                         "What is the access code for the north gate?")
        c = eng.complete(pre, suf, max_tokens=12, stop=stops, cache_prefix=False)
        answers[how] = c.text
    assert answers["mmap"] == answers["read"] and answers["read"].strip()


def test_an_engine_counts_with_its_own_vocabulary_when_none_was_loaded_ahead():
    """No vocab-only copy is loaded before the model (0.4 s for a 128K vocabulary); the counts
    are the same as that copy's."""
    import subprocess
    import sys

    code = (
        "from lcdoc.engine.llm import Engine, Tokenizer, _VOCAB_LOADED\n"
        "eng = Engine(n_ctx=1024, gpu_layers=0)\n"
        "assert eng.tokenizer.llm is eng.llm and not _VOCAB_LOADED, _VOCAB_LOADED\n"
        "text = 'The access code for the north gate is PELICAN-42. <|im_start|> ' * 50\n"
        "own = eng.count(text)\n"
        "ahead = Tokenizer(eng.path)\n"
        "assert ahead.llm is not eng.llm and ahead.count(text) == own > 500, own\n"
        "assert Engine(n_ctx=1024, gpu_layers=0).tokenizer.llm is ahead.llm\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
