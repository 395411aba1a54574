"""Quoted evidence, unsupported answers, invented citations, and the calibrated router."""

from __future__ import annotations

from lcdoc.qa.ask import Source, drop_unknown_citations
from lcdoc.qa.calibrate import effective_length
from lcdoc.qa.evidence import best_quote, key_terms, supported
from lcdoc.qa.route import choose_route, default_stuff_limit

MANUAL = ("7 Reading data from files. Large data objects will usually be read as values from "
          "external files rather than entered at the keyboard. To read an entire data frame "
          "directly, the external file will normally have a special form. The read.table() "
          "function reads such a file. The scan() function is more primitive.")
Q = "How do I read a data file into a data frame?"


def test_the_quote_is_the_sentence_that_holds_the_answer():
    a = "Use the read.table() function on the external file [1]."
    q = best_quote(a, Q, MANUAL)
    assert "read.table()" in q.text and q.coverage >= 0.6
    assert "keyboard" not in q.text and len(q.text) <= 300


def test_an_answer_no_sentence_holds_is_unsupported_and_a_refusal_is_not_judged():
    assert supported("Use the read.table() function on the external file [1].", Q, [MANUAL])
    assert not supported("Call pandas.read_csv with the delimiter set to a tab [2].", Q, [MANUAL])
    assert key_terms("Read a data frame [3].", Q) == set()
    assert supported("Read a data frame [3].", Q, [MANUAL])  # claims nothing beyond the question


def test_invented_citation_numbers_are_removed():
    srcs = [Source(1, "a.pdf", 3, "", 1.0), Source(2, "a.pdf", 4, "", 0.5)]
    text, dropped = drop_unknown_citations("It is read.table() [1][7], see also [2] and [12].", srcs)
    assert dropped == [7, 12] and text == "It is read.table() [1], see also [2] and."
    assert drop_unknown_citations("No citations.", srcs) == ("No citations.", [])


def test_effective_length_is_the_longest_length_holding_up_with_every_shorter_one():
    assert effective_length({1024: 1.0, 2048: 1.0, 4096: 0.33, 8192: 1.0}) == 2048
    assert effective_length({1024: 0.33, 2048: 1.0}) == 0
    assert effective_length({1024: 1.0, 2048: 0.67}) == 2048
    assert effective_length({1024: 1.0, 2048: 0.5, 4096: 1.0}) == 1024


def test_auto_stuffs_only_up_to_the_limit_and_retrieves_beyond_it():
    assert default_stuff_limit(8192) == 4096
    r = choose_route("What is the code?", 7000, 3000, stuff_limit=4096)
    assert r.route == "stuff"
    r = choose_route("What is the code?", 7000, 6000, stuff_limit=4096, limit_reason="calibrated: X")
    assert r.route == "rag" and "calibrated: X" in r.reasons and "4096" in r.reasons[-1]
    r = choose_route("Summarize the report", 7000, 6000, stuff_limit=4096)
    assert r.route == "map-reduce" and r.budget == 4096
    assert choose_route("What is the code?", 7000, 6000, mode="stuff", stuff_limit=4096).route == "stuff"
    assert choose_route("What is the code?", 7000, 6000).route == "stuff"  # no limit: as before


def test_the_sweep_stops_at_the_first_length_below_the_threshold_unless_full(monkeypatch):
    import lcdoc.qa.ask
    from lcdoc.qa import calibrate as cal

    class Eng:  # counts words; the planted facts are found only in haystacks up to 1,024 words
        n_ctx, path, cache_settings = 8192, __file__, "test"

        class arch:
            n_ctx_train = 8192

        def chat_parts(self, *a, **k):
            return "", "", []

        def count(self, text):
            return len(text.split())

    class Ans:
        def __init__(self, text):
            self.answer = text

    def fake_ask(question, paths, **kw):
        hay = open(paths[0]).read()
        fact = next(x for x in hay.split("\n\n") if "{" not in x and any(
            p in x for p in cal.PLACES) and len(x.split()) < 20)
        return Ans(fact if len(hay.split()) <= 1100 else "no idea")

    monkeypatch.setattr(lcdoc.qa.ask, "ask", fake_ask)
    monkeypatch.setattr(cal, "profile_path", lambda *a: __import__("pathlib").Path(
        __import__("tempfile").mkdtemp()) / "p.json")
    monkeypatch.setattr(cal, "model_sha256", lambda p: "0" * 64)
    from lcdoc.settings import load_settings

    quick = cal.calibrate(Eng(), load_settings(), [1024, 2048, 4096])
    assert sorted(map(int, quick.grid)) == [1024, 2048] and quick.effective_length == 1024
    full = cal.calibrate(Eng(), load_settings(), [1024, 2048, 4096], full=True)
    assert sorted(map(int, full.grid)) == [1024, 2048, 4096] and full.effective_length == 1024


def test_a_different_number_or_name_is_not_support():
    from lcdoc.qa.evidence import supported

    text = ["The vault combination is 31-41-59, kept by Ottoline Marsh in the north office."]
    q = "What is the vault combination?"
    assert supported("The combination is 31-41-59, kept by Ottoline Marsh.", q, text)
    assert not supported("The combination is 31-41-58, kept by Ottoline Marsh.", q, text)
    assert not supported("The combination is 31-41-59, kept by Ottoline Penrose.", q, text)
    assert supported("The combination is 31-41-58, kept by Ottoline Marsh.", q, text, exact=False)


def test_the_labelled_set_is_judged_better_with_exact_numbers_and_names():
    from pathlib import Path

    import pytest

    from lcdoc.eval.support import DEFAULT, labelled, score

    paths = [p for p in DEFAULT if Path(p).exists()]
    if len(paths) < 2:
        pytest.skip("Debian's licence texts are not on this machine")
    items = labelled(paths, 6, 0)
    before, after = score(items, exact=False), score(items, exact=True)
    assert after["precision"] > before["precision"] and after["recall"] >= 0.95
