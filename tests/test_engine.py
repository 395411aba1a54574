"""The llama.cpp engine with the packaged SmolLM2: tokenizer, chat template, prompt cache."""

import gzip
from pathlib import Path

import pytest

from lcdoc.engine.llm import Engine, Tokenizer, resolve_model

pytestmark = pytest.mark.slow
SEDFAQ = Path("/usr/share/doc/sed/sedfaq.txt.gz")


def long_text(chars: int) -> str:
    if SEDFAQ.exists():
        return gzip.decompress(SEDFAQ.read_bytes()).decode()[:chars]
    from tests.conftest import FILLER

    return ("\n\n".join(FILLER) + "\n\n") * (chars // 900)


def test_tokenizer_counts_with_the_models_own_vocab():
    tok = Tokenizer(resolve_model(None))
    assert tok.count("hello world") == len(tok.encode("hello world")) > 0
    assert tok.decode(tok.encode("The bakery opens at six.")).strip() == "The bakery opens at six."


def test_second_question_on_same_stuffed_document_starts_5x_sooner(tmp_path):
    doc = long_text(7000)
    eng = Engine(n_ctx=4096, cache_dir=tmp_path)
    times = []
    for q in ["What is sed?", "Who wrote the sed FAQ?"]:
        pre, suf, stops = eng.chat_parts("Answer from the document.", doc, q)
        c = eng.complete(pre, suf, max_tokens=8, stop=stops)
        times.append((c.prefill_s, c.n_cached, c.n_prompt))
    (cold, cached0, n), (warm, cached1, _) = times
    assert n > 1500 and cached0 == 0 and cached1 > 1500
    assert cold >= 5 * warm, times
    # Saved after the answer (the CLI does it once the answer is printed), a new process finds it.
    assert eng.stash_resident(disk_only=True)
    eng.cache.wait()
    eng2 = Engine(n_ctx=4096, cache_dir=tmp_path)
    pre, suf, stops = eng2.chat_parts("Answer from the document.", doc, "What is sed?")
    c = eng2.complete(pre, suf, max_tokens=8, stop=stops)
    assert c.n_cached > 1500 and cold >= 5 * c.prefill_s


def test_cached_and_uncached_answers_are_identical(tmp_path):
    doc = long_text(3000)
    eng = Engine(n_ctx=2048, cache_dir=tmp_path)
    pre, suf, stops = eng.chat_parts("Answer from the document.", doc, "What is this about?")
    a = eng.complete(pre, suf, max_tokens=24, stop=stops, cache_prefix=False).text
    b = eng.complete(pre, suf, max_tokens=24, stop=stops).text  # prefill + snapshot
    c = eng.complete(pre, suf, max_tokens=24, stop=stops).text  # restored
    assert a == b == c and a.strip()


def test_a_looping_answer_is_cut_where_the_repeat_begins():
    from lcdoc.engine.llm import repeat_start

    once = "The planner keeps the native context when the request fits, and says so in the plan. "
    assert repeat_start(once) == -1
    assert repeat_start(once + "Then it stops.") == -1
    assert repeat_start("Intro:\n" + once + once[:70]) == len("Intro:\n" + once)


def test_side_by_side_batches_go_in_sequence_id_order_after_refills(tmp_path):
    # llama.cpp splits a batch over per-sequence cache streams only along increasing ids: a batch
    # out of order would run as several passes. Uneven answer lengths make refills reorder the
    # streams (a later document takes a lower stream), which is the case that broke before.
    from lcdoc.engine.parallel import ParallelDecoder, Request

    eng = Engine(n_ctx=1024, cache_dir=tmp_path, n_seq=3)
    dec = ParallelDecoder(eng)
    tok = eng.tokenizer
    prompts = [tok.encode(f"Count the apples: {'apple ' * (5 + 7 * i)}") for i in range(6)]
    reqs = [Request(p, max_tokens=n) for p, n in zip(prompts, (3, 12, 6, 9, 2, 10))]
    batches, out_of_start_order = [], []
    fill = dec._fill_batch

    def recording(live, chunk):
        out_of_start_order.append(list(live) != sorted(live))
        rows = fill(live, chunk)
        b = dec.batch
        batches.append([b.seq_id[i][0] for i in range(b.n_tokens)])
        return rows

    dec._fill_batch = recording
    answers = dec.run(reqs)
    dec.close()
    assert len(answers) == 6 and all(isinstance(a, str) for a in answers)
    assert any(out_of_start_order), "the refills never reordered the streams"
    assert all(ids == sorted(ids) for ids in batches), [b for b in batches if b != sorted(b)][:3]


def test_side_by_side_answers_match_with_sampling_in_the_graph_or_in_numpy(tmp_path):
    # llama.cpp's in-graph sampler chain (penalty, then greedy) must choose what lcdoc's numpy
    # penalty and argmax choose, token for token, with refills and stop strings in play.
    from lcdoc.engine.parallel import ParallelDecoder, Request

    eng = Engine(n_ctx=1024, cache_dir=tmp_path, n_seq=3)
    asks = ["Write a short poem about the sea and ships.", "List three uses of copper.",
            "Explain why the sky is blue in two sentences.", "What is a prime number?",
            "Describe a bakery on Quay Street that bakes rye bread."]
    reqs = []
    for i, q in enumerate(asks):
        pre, suf, stops = eng.chat_parts("You are helpful.", "", q)
        a, b = eng.prompt_tokens(pre, suf)
        reqs.append(Request(a + b, 24 + 9 * i, tuple(stops) + ("sea",)))
    answers = {}
    for mode in ("host", "graph"):
        dec = ParallelDecoder(eng, sampling=mode)
        answers[mode] = dec.run(reqs)
        dec.close()
    assert all(answers["host"]) and answers["graph"] == answers["host"]
    # the engine's own single-sequence answers still work after the samplers are taken off
    assert eng.complete_tokens(reqs[1].prompt, [], max_tokens=8, cache_prefix=False).text
