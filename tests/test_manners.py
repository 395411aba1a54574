"""The small manners: one rule for empty input, citations that read cleanly, summaries as a
set, no escape codes under NO_COLOR."""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_lcdoc



@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "LCDOC_INDEX_DIR": str(tmp_path / "indexes"),
            "LCDOC_HISTORY_DB": str(tmp_path / "history.sqlite"), "LCDOC_NO_SERVER": "1"}


def run(env, *args):
    return run_lcdoc(list(args), env, timeout=300)


def test_nothing_to_read_is_exit_1_naming_it_for_every_command(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(env, "index", str(empty), "--index", "e")
    assert r.returncode == 1 and "nothing to index" in r.stderr
    assert not (tmp_path / "indexes" / "e").exists()  # no empty index left behind
    from lcdoc.index import Index

    Index.open("e2", tmp_path / "indexes", create=True).close()  # an empty index all the same
    for args in (["search", "lamp", "--index", "e2"], ["ask", "Where?", "--index", "e2"],
                 ["chat", "--index", "e2"]):
        r = run(env, *args)
        assert r.returncode == 1 and "is empty" in r.stderr, (args, r.stderr)
    r = run(env, "summarize", str(empty))
    assert r.returncode == 1 and "nothing to summarize" in r.stderr


@pytest.mark.parametrize("args", [["search", "", "--index", "x"], ["search", "q", "-k", "0"],
                                  ["ask", "q", "x.txt", "--ctx", "0"]])
def test_an_empty_query_k_0_and_ctx_0_are_usage_errors(env, args):
    assert run(env, *args).returncode == 2


def test_no_color_means_no_escape_codes_at_all(env):
    forced = {**env, "FORCE_COLOR": "1", "COLUMNS": "100"}
    assert "\x1b[" in run(forced, "plan").stdout  # a terminal gets bold and colour
    assert "\x1b[" not in run({**forced, "NO_COLOR": "1"}, "plan").stdout


def test_a_numbered_line_whose_sentence_runs_on_is_no_heading():
    from lcdoc.ingest.chunking import find_headings

    text = ("Copyright notice\n\n1 Redistributions of source code must retain the above\n"
            "copyright notice, this list of conditions.\n2 Redistributions in binary form\n"
            "must reproduce the notice.\n\n3 Installation\n\nRun make.\n")
    assert [h[2] for h in find_headings(text, "text")] == ["3 Installation"]


def test_one_source_per_stuffed_document():
    from lcdoc.ingest.document import Document
    from lcdoc.qa.strategies import attribute

    doc = Document("/d.md", "# Oil\n\nThe lamp oil is in the blue shed.\n\n# Keys\n\nThe keys "
                   "hang in the blue shed too.\n", "markdown", "")
    sources = attribute("The lamp oil and the keys are in the blue shed [1].", [doc],
                        "Where are the oil and keys?")
    assert [s.n for s in sources] == [1]


def test_the_terminal_lists_cited_sources_in_order_with_one_line_quotes(capsys):
    from lcdoc.qa.answer import Answer, Source
    from lcdoc.render import sources as _print_sources

    long_quote = "A sentence that goes on " * 20
    ans = Answer("x [2] [1]", "rag", False, (
        Source(2, "/b.txt", None, "", 0.9, True, quote=long_quote),
        Source(1, "/a.txt", None, "", 0.5, True, quote="short"),
        Source(3, "/c.txt", None, "", 0.4, False, quote="not cited")), {}, {}, "m", {})
    _print_sources(ans)
    out = capsys.readouterr().out.splitlines()
    listed = [line for line in out if line.strip().startswith("[")]
    assert [line.split("]")[0].strip() for line in listed] == ["[1", "[2"]
    assert all(len(line) < 110 for line in out)
    none = Answer("x", "rag", False, (Source(1, "/a.txt", None, "", 0.5, False),), {}, {}, "m", {})
    _print_sources(none)
    assert "cites none" in capsys.readouterr().out


def test_summaries_end_at_a_whole_sentence_and_index_links_each(tmp_path):
    from lcdoc.summarize import Summary, whole_sentences, write_index

    assert whole_sentences("It stores oil. The keys hang by the do") == "It stores oil."
    assert whole_sentences("Complete.") == "Complete."
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    s = Summary("/docs/sub/a b.txt", "### Stray\n\nThe first sentence. The second.", "stuff", 1,
                10, 0.1)
    write_index(out, [s], [], {s.path: out / "sub" / "a b.txt.md"},
                {s.path: "The Handbook"})
    index = (out / "index.md").read_text()
    assert "[The Handbook (a b.txt)](sub/a%20b.txt.md): The first sentence." in index
    assert "Stray" not in index and "/docs" not in index
