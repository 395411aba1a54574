"""Quoted evidence, unsupported answers, invented citations, and the calibrated router."""

from __future__ import annotations

from lcdoc.ask import Source, drop_unknown_citations
from lcdoc.calibrate import effective_length
from lcdoc.evidence import best_quote, key_terms, supported
from lcdoc.route import choose_route, default_stuff_limit

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
