"""The speed book and the time budget: prefill slows with length (attention), fitted from
measured prompts; calibrate feeds it; an escalation predicted past --max-seconds is not taken."""

from __future__ import annotations

import json

import pytest

from lcdoc.engine import speed as sp
from lcdoc.engine.arch import read_arch
from lcdoc.models import find_packaged_gguf
from tests.conftest import fresh_cache


@pytest.fixture
def book(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_cache(tmp_path)))
    return tmp_path / "cache" / "lcdoc" / "speeds.json"


def seconds(n: int, rate: float, attention: float, start: int = 0) -> float:
    return sp.Speed(rate, 50.0, 1, attention).prefill_seconds(n, start)


def test_the_fit_recovers_the_start_rate_and_the_attention_cost():
    points = [[0, n, seconds(n, 300.0, 3e-4)] for n in (1000, 2000, 6000)]
    points.append([4000, 7000, seconds(7000, 300.0, 3e-4, 4000)])  # after a restored prefix
    rate, attention = sp.fit_prefill(points)
    assert rate == pytest.approx(300.0, rel=1e-6) and attention == pytest.approx(3e-4, rel=1e-6)
    assert sp.fit_prefill([[0, 1000, 3.0], [0, 1200, 3.7]]) is None  # lengths too alike
    assert sp.fit_prefill([[0, 1000, 3.0]]) is None
    linear = sp.fit_prefill([[0, 1000, 4.0], [0, 4000, 12.0]])  # grows slower than its length
    assert linear[1] == 0.0 and linear[0] == pytest.approx((1000**2 + 4000**2) / (4 * 1000 + 12 * 4000), rel=1e-6)


def test_the_models_shape_gives_the_attention_cost_until_prompts_of_several_lengths_are_measured(book):
    arch = read_arch(find_packaged_gguf())
    prior = arch.attention_cost
    assert 1e-4 < prior < 1e-3  # SmolLM2: 30 layers of 9 heads over 106M weights
    key = "m|s|cpu|0"
    t = seconds(2000, 400.0, 2e-4)
    first = sp.record(key, 2000, t, 32, 0.5, prior)
    assert first.attention == prior and not first.fitted  # one length: the shape's cost
    assert first.prefill_tok_s == pytest.approx(sp.Speed(None, None, 0, prior).prefill_work(2000) / t)
    sp.record(key, 6000, seconds(6000, 400.0, 2e-4), 32, 0.5, prior)
    now = sp.lookup(key, prior)
    assert now.attention == pytest.approx(2e-4, rel=1e-6) and now.prefill_tok_s == pytest.approx(400.0)
    assert now.fitted
    entry = json.loads(book.read_text())[key]
    assert entry["attention_fitted"] is True and [p[1] for p in entry["points"]] == [2000, 6000]
    # An 8,000-token prompt is predicted from the fit, not from a straight line through 2,000.
    assert now.prefill_seconds(8000) == pytest.approx(seconds(8000, 400.0, 2e-4))
    assert now.prefill_seconds(8000) > 4 * seconds(2000, 400.0, 2e-4)
    assert sp.lookup("another|key", prior).prefill_tok_s is None
    assert sp.speed_key("m", "s", "cuda", 33, 128) != sp.speed_key("m", "s", "cuda", 33)  # kernels


@pytest.mark.slow
def test_calibrate_feeds_the_speed_book_with_prompts_of_several_lengths(tmp_path, book):
    from lcdoc.engine.llm import Engine
    from lcdoc.qa.calibrate import calibrate
    from lcdoc.settings import load_settings

    eng = Engine(n_ctx=4096, cache_dir=tmp_path / "pc")
    calibrate(eng, load_settings(index_dir=tmp_path / "idx"), [600, 1800], depths=(50,), full=True)
    key = sp.plan_key(eng)
    entry = json.loads(book.read_text())[key]
    ends = sorted(p[1] for p in entry["points"])
    assert len(ends) == 2 and ends[1] > 2.5 * ends[0]
    assert entry["attention_fitted"] is True and entry["prefill_tok_s"] > 0


@pytest.mark.slow
def test_an_escalation_past_the_time_budget_is_not_taken_and_the_answer_says_how_to_allow_it(
        tmp_path, book):
    from lcdoc.engine.llm import Engine
    from lcdoc.qa.ask import ask
    from lcdoc.settings import load_settings

    from test_ask import NEEDLE, QUESTION, FirstAnswerSaysMissing, haystack

    f = tmp_path / "doc.txt"
    f.write_text(haystack(0.5, 6000))  # ~2K tokens: over the 1K first pass, within the budget
    base = Engine(n_ctx=4096, cache_dir=tmp_path / "pc")
    tight = load_settings(index_dir=tmp_path / "idx", answer_tokens=48, max_seconds=0.5)
    a = ask(QUESTION, [str(f)], mode="rag", engine=FirstAnswerSaysMissing(base), settings=tight)
    assert not a.escalated and "--max-seconds" in a.not_read and "not read" in a.not_read
    assert a.as_json()["not_read"] == a.not_read
    assert any("SELF-ROUTE not taken" in r for r in a.reasons)
    roomy = tight.replace(max_seconds=600.0)
    eng = FirstAnswerSaysMissing(base)
    b = ask(QUESTION, [str(f)], mode="rag", engine=eng, settings=roomy)
    assert b.escalated and not b.not_read and NEEDLE in eng.prompts[1]
