"""The planner against KV sizes computed by hand from the real GGUFs' metadata."""

import json
import subprocess
import sys

import pytest

from lcdoc.engine.arch import read_arch
from lcdoc.engine.plan import make_plan
from lcdoc.engine.system import Memory
from lcdoc.errors import DoesNotFitError, ModelMissingError
from lcdoc.models import find_gemma_gguf, find_packaged_gguf

GiB = 2**30


def plan_json(*args):
    r = subprocess.run([sys.executable, "-m", "lcdoc", "plan", "--json", *args],
                       capture_output=True, text=True, timeout=120)
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
    r = subprocess.run([sys.executable, "-m", "lcdoc", "plan", "--model", str(tmp_path / "none.gguf")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "model not found" in r.stderr
