"""`lcdoc ask` end to end with the packaged models: routes, planted facts, citations, shell use."""

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from lcdoc.qa.ask import ask, lost_in_the_middle_order
from lcdoc.qa.route import choose_route, needs_whole
from lcdoc.settings import load_settings
from tests.conftest import FILLER, make_pdf, run_lcdoc

SEDFAQ = Path("/usr/share/doc/sed/sedfaq.txt.gz")
NEEDLE = "The access code for the archive room is 7341."
QUESTION = "What is the access code for the archive room?"


def test_route_rules():
    assert choose_route("what is x", 7000, 800).route == "stuff"
    assert choose_route("what is x", 7000, 900_000).route == "rag"
    assert choose_route("summarise the manual", 7000, 900_000).route == "map-reduce"
    assert choose_route("what is x", 7000, None, index_tokens=2_000_000).route == "rag"
    assert choose_route("what is x", 7000, 1000, index_tokens=2_000_000).route == "hybrid"
    assert choose_route("what is x", 7000, 800, mode="rag").route == "rag"
    assert needs_whole("Compare the two reports") and not needs_whole("Who signed it?")


def test_lost_in_the_middle_puts_the_best_at_both_ends():
    assert lost_in_the_middle_order([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]


def haystack(depth: float, chars: int) -> str:
    if SEDFAQ.exists():
        text = gzip.decompress(SEDFAQ.read_bytes()).decode()[:chars]
    else:
        text = ("\n\n".join(FILLER) + "\n\n") * (chars // 900)
    paras = text.split("\n\n")
    k = int(len(paras) * depth)
    return "\n\n".join(paras[:k] + [NEEDLE] + paras[k:])


@pytest.fixture()
def settings(tmp_path):
    # the time budget is tested on its own (test_speed.py): here a loaded machine must not
    # turn an escalation under test into one not taken
    return load_settings(index_dir=tmp_path / "indexes", answer_tokens=48, max_seconds=3600.0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stuff", "rag"])
def test_planted_fact_is_found_at_three_depths(tmp_path, settings, mode):
    from lcdoc.engine.llm import Engine

    eng = Engine(n_ctx=4096, cache_dir=tmp_path / "pc")
    settings = dataclasses.replace(settings, answer_tokens=24)  # the fact is the first sentence
    found = []
    for depth in (0.1, 0.5, 0.9):
        f = tmp_path / f"doc{depth}.txt"
        f.write_text(haystack(depth, 5500))  # ~1.9K tokens: the first tenth, the middle, the end
        a = ask(QUESTION, [str(f)], mode=mode, engine=eng, settings=settings)
        assert a.route == mode
        found.append("7341" in a.answer)
        if mode == "rag":
            assert any(NEEDLE in (Path(s.path).read_text() if Path(s.path).exists() else "")
                       for s in a.sources)
    assert all(found), found


@pytest.mark.slow
def test_long_document_is_retrieved_and_cites_the_right_pdf_page(tmp_path, settings):
    pages = [" ".join(FILLER[(i + j) % 5] for j in range(5)) for i in range(90)]
    pages[27] += " " + NEEDLE
    pdf = make_pdf(tmp_path / "manual.pdf", pages)
    a = ask(QUESTION, [str(pdf)], settings=settings)
    assert a.route == "rag"  # 90 pages (~13K tokens) do not fit an 8K context
    assert "7341" in a.answer
    assert a.sources[0].page == 28 or any(s.page == 28 for s in a.sources[:3])


def run(args, stdin=None, env=None):
    return run_lcdoc(args, env, stdin)


@pytest.mark.slow
def test_piped_note_is_stuffed_and_json_matches_schema(tmp_path):
    note = "Meeting note. The harbour festival moves to the second weekend of August. " + FILLER[0]
    r = run(["ask", "When is the harbour festival?", "--json", "--index-dir", str(tmp_path)],
            stdin=note)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"answer", "route", "escalated", "sources", "tokens", "timings", "model", "plan"}
    assert out["route"] == "stuff" and out["escalated"] is False
    assert set(out["tokens"]) == {"context", "prompt", "restored", "completion"}
    assert set(out["timings"]) == {"start_s", "load_s", "read_s", "retrieve_s", "prefill_s",
                                   "generate_s", "evidence_s", "save_s"}
    assert set(out["sources"][0]) == {"n", "path", "page", "page_end", "heading", "score", "cited",
                                      "quote"}
    assert isinstance(out["supported"], bool)
    assert out["sources"][0]["n"] == 1 and out["server"] is False and out["failed"] == []
    assert "August" in out["answer"]


def test_errors_have_distinct_messages_and_exit_codes(tmp_path):
    r = run(["ask", "q", "--index", "nope", "--index-dir", str(tmp_path)])
    assert r.returncode == 1 and "no such index: nope" in r.stderr
    r = run(["ask", "q", str(tmp_path / "missing.txt")])
    assert r.returncode == 1 and "missing.txt: no such file" in r.stderr
    r = run(["ask", "q", str(tmp_path), "--mode", "sideways"])
    assert r.returncode == 2 and "--mode sideways" in r.stderr
    r = run(["ask", "q", "--model", str(tmp_path / "m.gguf"), "-"], stdin="some text")
    assert r.returncode == 1 and "model not found" in r.stderr


@pytest.mark.slow
def test_named_file_is_stuffed_and_the_index_retrieved(tmp_path, corpus):
    from lcdoc.index import Index, update_index

    s = load_settings(index_dir=tmp_path, answer_tokens=48)
    idx = Index.open("kb", tmp_path, create=True)
    update_index(idx, [corpus])
    note = tmp_path / "note.txt"
    note.write_text("Memo. " + NEEDLE + " " + FILLER[1])
    a = ask(QUESTION, [str(note)], index_name="kb", settings=s)
    assert a.route == "hybrid"
    assert a.sources[0].path.endswith("note.txt") or any(
        x.path.endswith("note.txt") for x in a.sources)
    assert any(str(corpus) in x.path for x in a.sources)  # the index contributed passages
    assert "7341" in a.answer


class FirstAnswerSaysMissing:
    """The real engine, whose first answer is replaced by a refusal: the escalation's trigger,
    made deterministic (a 135M model's refusals depend on the text); everything else is real."""

    REFUSAL = "The sources do not contain the answer."

    def __init__(self, eng):
        self.eng, self.prompts = eng, []

    def __getattr__(self, name):
        return getattr(self.eng, name)

    def complete(self, prefix, suffix, **options):
        self.prompts.append(prefix)
        if len(self.prompts) > 1:
            return self.eng.complete(prefix, suffix, **options)
        # the first answer is replaced: its prompt is read whole, one token is enough of it
        c = self.eng.complete(prefix, suffix, **{**options, "max_tokens": 1})
        return dataclasses.replace(c, text=self.REFUSAL)


@pytest.mark.slow
def test_self_route_escalates_to_stuffing_when_the_document_fits(tmp_path, settings):
    from lcdoc.engine.llm import Engine

    eng = FirstAnswerSaysMissing(Engine(n_ctx=4096, cache_dir=tmp_path / "pc"))
    f = tmp_path / "doc.txt"
    f.write_text(haystack(0.5, 6000))  # ~2K tokens: over the 1K first pass, within the budget
    a = ask(QUESTION, [str(f)], mode="rag", engine=eng, settings=settings)
    assert a.route == "rag" and a.escalated
    assert len(eng.prompts) == 2 and any("stuffed whole" in r for r in a.reasons)
    first, second = (eng.eng.count(p) for p in eng.prompts)
    assert second > first + 500 and NEEDLE in eng.prompts[1]
    assert "7341" in a.answer and a.sources[0].path.endswith("doc.txt")
    assert a.as_json()["escalated"] is True


@pytest.mark.slow
def test_self_route_widens_retrieval_when_the_document_does_not_fit(tmp_path, settings):
    from lcdoc.engine.llm import Engine

    # each page its own log line: passages repeating text already given are not given again
    pages = [f"Log {i}: pump {i % 7 + 2} ran {i * 3 % 11 + 1} hours on shift {i % 4}. "
             + " ".join(FILLER[(i + j) % 5] for j in range(5)) for i in range(90)]
    pages[60] += " " + NEEDLE
    pdf = make_pdf(tmp_path / "manual.pdf", pages)
    eng = FirstAnswerSaysMissing(Engine(n_ctx=4096, cache_dir=tmp_path / "pc"))
    a = ask(QUESTION, [str(pdf)], engine=eng, settings=settings)
    assert a.route == "rag" and a.escalated
    assert any("full" in r and "budget" in r for r in a.reasons)
    first, second = (eng.eng.count(p) for p in eng.prompts)
    assert second > 2 * first  # the wider budget, neighbours included
    assert NEEDLE in " ".join(eng.prompts[1].split())  # a PDF line may break inside it
    # The source that carries the needle is labelled with the pages of the text the model got.
    assert any(s.page <= 61 <= (s.page_end or s.page) for s in a.sources if s.page)


def test_sources_keep_the_numbers_the_model_saw_and_uncited_ones_are_marked():
    from lcdoc.qa.ask import Source, mark_cited

    srcs = [Source(i, f"d{i}.txt", i, "", 1.0 / i) for i in (1, 2, 3)]
    out = mark_cited("The pumps run at night [3], checked weekly [2].", srcs)
    assert [s.n for s in out] == [1, 2, 3]
    assert [s.cited for s in out] == [False, True, True]
    assert all(s.cited for s in mark_cited("No brackets at all.", srcs))


def test_an_answer_saying_the_sources_lack_it_is_attributed_to_no_page():
    from lcdoc.qa.ask import attribute
    from lcdoc.ingest import Document

    doc = Document("r.txt", "The generator is tested on Mondays by the duty engineer.", "text", "")
    lacking = attribute("The sources do not contain the answer.", [doc], "Who tests the generator?")
    assert [s.cited for s in lacking] == [False] and lacking[0].page is None
    found = attribute("The duty engineer tests the generator on Mondays.", [doc], "Who tests it?")
    assert found[0].cited and found[0].score > 0
