"""Conversations that last: turns that extend the live context, follow-ups that retrieve with
the conversation, the history database, --continue and a chat longer than the context."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lcdoc.app.conversations import open_thread
from lcdoc.app.history import History
from lcdoc.qa.conversation import SUMMARY_QUESTION, fit_history, retrieval_query, summary_turn
from tests.conftest import FILLER, LCDOC



def words(text: str) -> int:
    return len(text.split())


# --- fitting the conversation -----------------------------------------------------------------
def test_every_turn_is_carried_while_they_fit():
    turns = [(f"question {i}", "answer " * 10) for i in range(5)]
    fitted = fit_history(turns, room=1000, count=words)
    assert fitted.turns == turns and fitted.folded == 0


def test_turns_that_outgrow_the_room_are_folded_and_never_exceed_it():
    turns = [(f"question number {i}?", f"Answer {i} says this. " + "filler " * 30)
             for i in range(40)]
    fitted = fit_history(turns, room=400, count=words)
    assert fitted.folded > 0 and fitted.turns[0][0] == SUMMARY_QUESTION
    assert fitted.turns[1:] == turns[fitted.folded:]  # the newest kept whole, in order
    assert sum(words(q) + words(a) + 16 for q, a in fitted.turns) <= 400
    assert "folded into a summary" in fitted.reason


def test_the_fold_point_holds_while_the_kept_turns_grow():
    """Each next turn extends the context: the folded part (the prompt's prefix) stays put."""
    turns = [(f"q{i}?", "word " * 20) for i in range(60)]
    points = [fit_history(turns[:n], room=600, count=words).folded for n in range(20, 60)]
    changes = sum(1 for a, b in zip(points, points[1:]) if a != b)
    assert 0 < changes <= len(points) // 4


def test_the_summary_names_earlier_questions_and_first_sentences():
    q, a = summary_turn([("What does G do?", "It appends the hold space. More detail here.")])
    assert q == SUMMARY_QUESTION
    assert "What does G do?" in a and "It appends the hold space." in a and "More" not in a


def test_a_follow_up_searches_with_the_conversations_last_questions():
    history = [("Which sed command appends the hold space to the pattern space?", "G.")]
    query = retrieval_query("and what does the lowercase one do?", history)
    assert "hold space" in query and query.endswith("lowercase one do?")
    assert retrieval_query("standalone?", []) == "standalone?"


# --- the history database ---------------------------------------------------------------------
def _answer(text: str) -> dict:
    return {"answer": text, "route": "stuff", "model": "m.gguf", "sources": [{"n": 1}],
            "documents": [["/d.txt", "ab12"]], "plan": {}, "timings": {}, "tokens": {}}


def test_history_records_turns_searches_and_deletes(tmp_path):
    h = History(tmp_path / "data" / "history.sqlite")
    assert h.record("c1", "Where is the lamp oil?", _answer("In the shed."), ["/d.txt"], None,
                    "auto") == 1
    assert h.record("c1", "And the keys?", _answer("On the hook."), ["/d.txt"], None, "auto") == 2
    h.record("c2", "Other topic", _answer("Yes."), [], "idx", "rag")
    assert [e.turn for e in h.turns("c1")] == [1, 2]
    assert h.last_conversation() == "c2"
    assert [e.question for e in h.recent(search="lamp oil")] == ["Where is the lamp oil?"]
    assert h.get(1).sources == [{"n": 1}] and h.get(1).documents == [["/d.txt", "ab12"]]
    assert h.delete("c1") == 2 and h.delete_all() == 1
    assert stat.S_IMODE((tmp_path / "data" / "history.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_a_damaged_history_is_set_aside_not_deleted(tmp_path):
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    said = []
    h = History(path, said.append)
    assert h.record("c", "q", _answer("a"), [], None, "auto") == 1
    aside = list(tmp_path.glob("history.sqlite.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert said and "set aside" in said[0]


def test_concurrent_writers_each_get_their_own_turn(tmp_path):
    db = tmp_path / "h.sqlite"
    History(db).close()
    code = ("import sys; from lcdoc.app.history import History\n"
            "h = History(__import__('pathlib').Path(sys.argv[1]))\n"
            "for i in range(20): h.record('shared', f'q{i}', {'answer': 'a'}, [], None, 'auto')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)]) for _ in range(4)]
    assert all(p.wait(120) == 0 for p in procs)
    turns = [r[0] for r in sqlite3.connect(db).execute(
        "SELECT turn FROM entries WHERE conversation = 'shared' ORDER BY turn")]
    assert turns == list(range(1, 81))


def test_continuing_keeps_the_conversations_documents(tmp_path):
    h = History(tmp_path / "h.sqlite")
    h.record("c9", "q1", _answer("a1"), ["/docs/a.txt"], "kb", "auto")
    t = open_thread(h, "last", [], None, "auto")
    assert (t.id, t.turns, t.paths, t.index, t.resumed) == ("c9", [("q1", "a1")],
                                                            ["/docs/a.txt"], "kb", True)
    with pytest.raises(Exception, match="no conversation"):
        open_thread(h, "deadbeef", [], None, "auto")
    assert not open_thread(h, None, ["x"], None, "auto").turns


# --- through the console script ----------------------------------------------------------------
@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "LCDOC_INDEX_DIR": str(tmp_path / "indexes"),
            "LCDOC_HISTORY_DB": str(tmp_path / "history.sqlite"),
            "LCDOC_SOCKET": str(tmp_path / "run" / "s.sock"), "LCDOC_ANSWER_TOKENS": "24"}


@pytest.fixture()
def doc(tmp_path) -> Path:
    path = tmp_path / "station.txt"
    path.write_text("The emergency generator is tested every Monday by the duty engineer, "
                    "Margit Olander. " + " ".join(FILLER[i % 5] for i in range(30)) + "\n")
    return path


@pytest.mark.slow
def test_each_chat_turn_restores_the_whole_previous_turn(env, doc):
    questions = "Who tests the generator?\nOn which day?\nWhat else is maintained?\n"
    r = subprocess.run(LCDOC + ["chat", str(doc), "--json", "--no-server", "--mode", "stuff"],
                       input=questions, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    turns = [json.loads(x) for x in r.stdout.splitlines()]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert len({t["conversation"] for t in turns}) == 1
    assert [t["question"] for t in turns] == questions.splitlines()
    for before, after in zip(turns, turns[1:]):
        held = before["tokens"]["prompt"] + before["tokens"]["completion"] - 1
        assert after["tokens"]["restored"] >= held - 2, (before["tokens"], after["tokens"])
        assert after["tokens"]["prompt"] <= after["tokens"]["context"]


@pytest.mark.slow
def test_ask_continue_and_log_from_new_processes(env, doc, tmp_path):
    def ask(*args):
        r = subprocess.run(LCDOC + ["ask", *args, "--json", "--no-server"], capture_output=True,
                           text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    first = ask("Who tests the generator?", str(doc))
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = subprocess.run(LCDOC + ["ask", "-c", "On which day?", "--json", "--no-server"],
                       capture_output=True, text=True, env=env, timeout=600, cwd=other,
                       stdin=subprocess.DEVNULL)
    second = json.loads(r.stdout)
    assert (second["conversation"], second["turn"]) == (first["conversation"], 2)
    assert second["documents"][0][0] == str(doc)  # the conversation's document, from elsewhere
    log = json.loads(subprocess.run(LCDOC + ["log", "--json"], capture_output=True, text=True,
                                    env=env).stdout)
    assert [e["question"] for e in log] == ["On which day?", "Who tests the generator?"]
    shown = subprocess.run(LCDOC + ["log", str(log[1]["id"])], capture_output=True, text=True,
                           env=env).stdout
    assert "Who tests the generator?" in shown and "Sources:" in shown
    quiet = subprocess.run(LCDOC + ["ask", "Who?", str(doc), "--no-log", "--no-server"],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert quiet.returncode == 0
    assert len(json.loads(subprocess.run(LCDOC + ["log", "--json"], capture_output=True,
                                         text=True, env=env).stdout)) == 2
    gone = subprocess.run(LCDOC + ["log", "--delete", first["conversation"]],
                          capture_output=True, text=True, env=env)
    assert gone.returncode == 0 and "deleted 2" in gone.stderr
