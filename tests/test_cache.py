"""The prompt cache: byte budgets, damaged states, leftovers of a kill, resident prefixes."""

import os
import time

import numpy as np
import pytest

from lcdoc.engine.cache import SUFFIX, PromptCache, Snapshot, disk_budget


def snap(n_bytes: int, n_tokens: int = 4) -> Snapshot:
    state = np.random.default_rng(n_bytes).integers(0, 255, n_bytes, dtype=np.uint8)
    return Snapshot(n_tokens, np.arange(n_tokens, dtype=np.int32), state, n_bytes)


def test_a_state_larger_than_the_disk_budget_is_not_written_and_evicts_nothing(tmp_path):
    cache = PromptCache(tmp_path, memory_bytes=0, disk_bytes=10_000)
    cache.put("small", snap(3000))
    cache.wait()
    cache.put("huge", snap(20_000))
    cache.wait()
    assert (tmp_path / f"small{SUFFIX}").exists()
    assert not (tmp_path / f"huge{SUFFIX}").exists()


def test_a_state_that_fits_evicts_the_least_recently_used_until_it_fits(tmp_path):
    cache = PromptCache(tmp_path, memory_bytes=0, disk_bytes=10_000)
    for key in ("a", "b"):
        cache.put(key, snap(4000))
        cache.wait()
        time.sleep(0.02)
    os.utime(tmp_path / f"a{SUFFIX}")  # a used again: b is now the older
    cache.put("c", snap(4000))
    cache.wait()
    assert sorted(p.stem for p in tmp_path.glob(f"*{SUFFIX}")) == ["a", "c"]
    assert sum(p.stat().st_size for p in tmp_path.glob(f"*{SUFFIX}")) <= 10_000


def test_a_truncated_state_is_a_miss_and_is_deleted(tmp_path):
    cache = PromptCache(tmp_path, memory_bytes=0, disk_bytes=10**6)
    cache.put("k", snap(5000))
    cache.wait()
    path = tmp_path / f"k{SUFFIX}"
    path.write_bytes(path.read_bytes()[:-100])
    fresh = PromptCache(tmp_path, memory_bytes=0, disk_bytes=10**6)
    assert fresh.get("k") is None
    assert not path.exists()


def test_a_read_state_round_trips(tmp_path):
    cache = PromptCache(tmp_path, memory_bytes=0, disk_bytes=10**6)
    s = snap(5000, n_tokens=7)
    cache.put("k", s)
    cache.wait()
    back = PromptCache(tmp_path, memory_bytes=0).get("k")
    assert back is not None and back.n_tokens == 7 and back.size == 5000
    assert bytes(back.llama_state) == bytes(s.llama_state)


def test_temporary_files_of_a_killed_writer_are_cleaned_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / f"x{SUFFIX}.tmp-{2**22 + 12345}-1"  # no such pid
    live = tmp_path / f"y{SUFFIX}.tmp-{os.getppid()}-1"
    dead.write_bytes(b"partial")
    live.write_bytes(b"in progress")
    PromptCache(tmp_path, memory_bytes=0)
    assert not dead.exists() and live.exists()


def test_memory_keeps_states_within_its_byte_budget(tmp_path):
    cache = PromptCache(None, memory_bytes=10_000)
    for key in "abc":
        cache.put(key, snap(4000))
    assert list(cache.mem) == ["b", "c"]
    cache.put("big", snap(50_000))
    assert "big" not in cache.mem and list(cache.mem) == ["b", "c"]


def test_the_disk_budget_defaults_to_a_share_of_free_space(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert 0.2 * free <= disk_budget(tmp_path) <= 0.3 * free
    assert disk_budget(tmp_path, 1234) == 1234


@pytest.mark.slow
def test_a_state_llama_cpp_refuses_is_deleted_and_the_question_still_answered(tmp_path):
    from lcdoc.engine.cache import prefix_key
    from lcdoc.engine.llm import Engine

    eng = Engine(n_ctx=2048, cache_dir=tmp_path)
    pre, suf, stops = eng.chat_parts("Answer.", "The gate code is PELICAN. " * 40, "What is the gate code?")
    p, _ = eng.prompt_tokens(pre, suf)
    key = prefix_key(eng.model_id, eng.cache_settings, p)
    garbage = np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8)
    Snapshot(len(p), np.asarray(p, dtype=np.int32), garbage, len(garbage)).write(tmp_path / f"{key}{SUFFIX}")
    c = eng.complete(pre, suf, max_tokens=12, stop=stops)
    assert c.text.strip() and c.n_cached == 0
    assert not (tmp_path / f"{key}{SUFFIX}").exists()
    again = eng.complete(pre, suf, max_tokens=12, stop=stops)  # now resident: no second refusal
    assert again.text == c.text and again.n_cached > len(p) - 2
