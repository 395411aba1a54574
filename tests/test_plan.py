"""The planner against KV sizes computed by hand from the real GGUFs' metadata."""

import json

import pytest

from lcdoc.engine.arch import read_arch
from lcdoc.engine.plan import make_plan
from lcdoc.engine.system import Memory
from lcdoc.errors import DoesNotFitError, ModelMissingError
from lcdoc.models import find_gemma_gguf, find_packaged_gguf

from tests.conftest import run_lcdoc

GiB = 2**30


def plan_json(*args):
    r = run_lcdoc(["plan", "--json", *args], timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_smollm2_kv_sizes_match_hand_computation():
    out = plan_json()
    m = out["model"]
    assert (m["arch"], m["n_layer"], m["n_head"], m["n_head_kv"], m["head_dim"]) == ("llama", 30, 9, 3, 64)
    assert m["n_ctx_train"] == 8192 and m["rope_freq_base"] == 100000.0 and m["sliding_window"] is None
    # 2 (K and V) x 30 layers x 3 KV heads x 64 dims x 2 bytes
    assert out["kv_bytes_per_token"]["f16"] == 2 * 30 * 3 * 64 * 2 == 23040
    assert out["kv_bytes_per_token"]["q8_0"] == 2 * 30 * 3 * 64 * 34 / 32
    assert out["kv_bytes_per_token"]["q4_0"] == 2 * 30 * 3 * 64 * 18 / 32
    assert out["kv_cache_bytes"]["f16"] == 23040 * 8192
    assert out["plan"]["n_ctx"] == 8192 and out["plan"]["rope_scaling"] == "none"
    assert out["plan"]["flash_attn"] is True


def test_smollm2_at_128k_chooses_yarn_factor_16():
    out = plan_json("--ctx", "131072")
    p = out["plan"]
    assert p["rope_scaling"] == "yarn" and p["rope_factor"] == 16
    assert p["n_ctx"] == 131072
    assert out["kv_cache_bytes"]["f16"] == 23040 * 131072


def test_gemma3_sliding_window_layers_hold_only_the_window():
    a = read_arch(find_gemma_gguf())
    assert (a.arch, a.n_layer, a.n_head_kv, a.head_dim, a.sliding_window) == ("gemma3", 18, 1, 256, 512)
    assert len(a.swa_layers) == 15 and 5 not in a.swa_layers and 17 not in a.swa_layers
    per_layer_tok = 2 * 1 * 256 * 2  # K+V, 1 KV head, 256 dims, f16
    assert a.kv_bytes_per_token("f16") == 18 * per_layer_tok
    # 3 global layers x 32768 cells + 15 window layers x (512 + 512 ubatch) cells
    windowed = per_layer_tok * (3 * 32768 + 15 * 1024)
    assert a.kv_cache_bytes(32768, swa_full=False) == windowed == 111 * 2**20
    assert a.kv_cache_bytes(32768, swa_full=True) == 576 * 2**20
    out = plan_json("--model", str(find_gemma_gguf()))
    expect = windowed if not out["plan"]["swa_full"] else 576 * 2**20
    assert out["kv_cache_bytes"]["f16"] == expect


def test_tight_memory_picks_a_quantised_cache_then_refuses_with_numbers():
    a = read_arch(find_packaged_gguf())
    roomy = make_plan(a, Memory(8 * GiB), 131072)
    assert roomy.type_k == "f16"
    tight = make_plan(a, Memory(int(2.6 * GiB)), 131072)
    assert tight.type_k in ("q8_0", "q4_0") and tight.flash_attn
    assert make_plan(a, Memory(int(1.5 * GiB)), 131072).type_k == "q4_0"
    with pytest.raises(DoesNotFitError, match="does not fit.*GiB|MiB"):
        make_plan(a, Memory(600 * 2**20), 131072)


def test_gpu_plan_offloads_all_layers_when_they_fit():
    from lcdoc.engine.system import GPU

    a = read_arch(find_packaged_gguf())
    p = make_plan(a, Memory(8 * GiB, (GPU(0, "H100", 70 * GiB, 80 * GiB),), True), 131072)
    assert p.device == "cuda" and p.n_gpu_layers == a.n_layer + 1 and p.type_k == "f16"


def test_missing_or_non_gguf_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelMissingError, match="not a GGUF"):
        read_arch(bad)
    r = run_lcdoc(["plan", "--model", tmp_path / "none.gguf"])
    assert r.returncode == 1 and "model not found" in r.stderr


def test_a_gguf_cut_anywhere_in_its_header_is_named_corrupt_not_a_crash(tmp_path):
    """The header is parsed from a memory map: a file that ends inside it, in a key, a value or
    the vocabulary's strings, is a ModelMissingError, and a whole one reads as before."""
    from lcdoc.engine.gguf import read_metadata
    from lcdoc.models import find_packaged_gguf

    whole = find_packaged_gguf().read_bytes()[: 4 << 20]  # the header lies well inside 4 MiB
    meta = read_metadata(find_packaged_gguf())
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.tokens"] == "<array of 49152>"
    for cut in (4, 7, 23, 100, 2000, 300_000, 1_000_000):
        part = tmp_path / f"cut-{cut}.gguf"
        part.write_bytes(whole[:cut])
        with pytest.raises(ModelMissingError, match="truncated or corrupt"):
            read_metadata(part)
    # a hostile header: one key whose value is an array of arrays of arrays ... 100,000 deep
    import struct

    deep = tmp_path / "deep.gguf"
    key = b"x"
    deep.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 100_000)
    with pytest.raises(ModelMissingError, match="truncated or corrupt"):
        read_metadata(deep)


# --- several GPUs: the planner is a pure function of the model's metadata and the memory -------
def llama70b():
    """The Llama-3-70B shape (80 layers, 8 KV heads, 128K) at Q4_K_M, as its GGUF would say."""
    import dataclasses

    from lcdoc.engine.arch import read_arch
    from lcdoc.engine.llm import resolve_model

    return dataclasses.replace(
        read_arch(resolve_model(None)), name="llama-3-70b", arch="llama", n_layer=80, n_head=64,
        n_head_kv=8, n_embd=8192, head_dim_k=128, head_dim_v=128, n_ctx_train=131072,
        rope_freq_base=500000.0, n_vocab=128256, file_bytes=int(42.5 * 2**30), swa_layers=(),
        sliding_window=None)


def gpus(*free_gib):
    from lcdoc.engine.system import GPU, Memory

    return Memory(64 * 2**30, tuple(GPU(i, "H100", int(f * 2**30), 80 * 2**30)
                                     for i, f in enumerate(free_gib)), True)


def test_a_model_that_fits_one_gpu_is_not_split():
    from lcdoc.engine.plan import make_plan

    p = make_plan(llama70b(), gpus(60, 139), n_ctx=8192)
    assert p.split_mode == "none" and p.main_gpu == 1 and p.type_k == "f16"
    kw = p.llama_kwargs(llama70b())
    assert kw["main_gpu"] == 1 and "tensor_split" not in kw


def test_70b_at_128k_is_split_evenly_over_two_equal_gpus_keeping_f16():
    from lcdoc.engine.plan import make_plan

    p = make_plan(llama70b(), gpus(79, 79), n_ctx=131072)
    assert p.kv_cache_bytes == 40 * 2**30  # 80 layers x 8 heads x 128 x 2 (K, V) x 2 bytes x 128K
    assert p.split_mode == "layer" and p.type_k == "f16" and p.tensor_split == (0.5, 0.5)
    assert all(b <= 79 * 2**30 * 0.85 for _, b in p.gpu_bytes)
    assert sum(b for _, b in p.gpu_bytes) >= p.weights_bytes + p.kv_cache_bytes
    assert any("layers split over GPU 0 50%" in r for r in p.reasons)


def test_unequal_gpus_take_layers_in_proportion_to_free_memory():
    from lcdoc.engine.plan import make_plan

    p = make_plan(llama70b(), gpus(79, 40), n_ctx=131072)
    assert p.split_mode == "layer" and p.main_gpu == 0
    big, small = p.tensor_split
    assert big > small > 0 and abs(big + small - 1) < 1e-3
    per_gpu = dict(p.gpu_bytes)
    assert per_gpu[0] <= 79 * 2**30 * 0.85 and per_gpu[1] <= 40 * 2**30 * 0.85


def test_f16_over_two_gpus_is_preferred_to_a_quantised_cache_on_one_and_q8_used_when_needed():
    from lcdoc.engine.plan import make_plan

    assert make_plan(llama70b(), gpus(79, 79), n_ctx=131072).type_k == "f16"
    p = make_plan(llama70b(), gpus(45, 45), n_ctx=131072)  # f16 needs ~82 GiB: only q8_0 fits
    assert p.split_mode == "layer" and p.type_k == "q8_0"


def test_too_little_memory_in_total_is_refused_with_the_numbers():
    from lcdoc.engine.plan import make_plan
    from lcdoc.errors import DoesNotFitError

    with pytest.raises(DoesNotFitError) as e:
        make_plan(llama70b(), gpus(12, 12), n_ctx=131072)
    msg = str(e.value)
    assert "does not fit" in msg and "weights 42.50 GiB" in msg and "q4_0" in msg


def test_the_gpu_memory_limit_makes_a_model_that_fits_one_large_gpu_split_over_two(monkeypatch):
    from lcdoc.engine.plan import make_plan
    from lcdoc.engine.system import limit_gpus
    from lcdoc.settings import load_settings

    h200s = gpus(139, 139)
    assert make_plan(llama70b(), h200s, n_ctx=131072).split_mode == "none"
    monkeypatch.setenv("LCDOC_GPU_MEMORY_GB", "79")
    limit = int(load_settings().gpu_memory_gb * 2**30)
    shared = h200s.__class__(h200s.ram_available_bytes, limit_gpus(h200s.gpus, limit), True)
    assert [g.free_bytes for g in shared.gpus] == [limit, limit] and all(g.limited for g in shared.gpus)
    assert limit_gpus(gpus(40).gpus, limit)[0].free_bytes == 40 * 2**30  # never raised
    p = make_plan(llama70b(), shared, n_ctx=131072)
    assert p.split_mode == "layer" and p.tensor_split == (0.5, 0.5) and p.type_k == "f16"
    assert "usable (the gpu_memory_gb limit)" in p.reasons[0]
