"""Each planner rule on its own (lcdoc.engine.plan): a pure function of the model's metadata and
the machine, returning its decision and the reasons it gives."""

from __future__ import annotations

import pytest

from lcdoc.engine.arch import read_arch
from lcdoc.engine.plan import (Device, Placement, cache_reasons, check_request, choose_batch,
                               choose_cache, choose_load,
                               choose_context, choose_device, choose_gpu_layers,
                               choose_partial_offload, choose_prompt_kernels, choose_rope,
                               choose_swa, make_plan, split_reasons)
from lcdoc.engine.system import GPU, Memory
from lcdoc.errors import UsageError
from lcdoc.models import find_gemma_gguf, find_packaged_gguf

GiB = 2**30


@pytest.fixture(scope="module")
def smol():
    return read_arch(find_packaged_gguf())


@pytest.fixture(scope="module")
def gemma():
    return read_arch(find_gemma_gguf())


def h100(i: int = 0, free: float = 79) -> GPU:
    return GPU(i, "NVIDIA H100", int(free * GiB), 80 * GiB)


def test_requests_that_cannot_be_planned_are_refused():
    with pytest.raises(UsageError, match="at least one sequence"):
        check_request(4096, 0, None)
    with pytest.raises(UsageError, match="under 256"):
        check_request(100, 1, None)
    with pytest.raises(UsageError, match="q5_1"):
        check_request(4096, 1, "q5_1")


def test_the_device_is_the_gpu_with_most_free_memory_unless_offload_is_off():
    mem = Memory(64 * GiB, (h100(0, 10), h100(1, 70)), gpu_offload=True)
    d = choose_device(mem, None)
    assert d.value.on_gpu and d.value.main_gpu == 1 and d.value.budget == int(70 * GiB * 0.85)
    assert "GPU 0" in d.reasons[0] and "GPU 1" in d.reasons[0]
    off = choose_device(mem, 0)
    assert not off.value.on_gpu and "offload disabled" in off.reasons[0]
    assert "without GPU support" in choose_device(Memory(8 * GiB), None).reasons[0]


def test_the_context_is_the_one_asked_else_the_largest_that_fits_side_by_side(smol):
    assert choose_context(smol, 2048, 1, 10 * GiB).value == 2048
    assert choose_context(smol, None, 1, 10 * GiB).value == smol.n_ctx_train
    tight = choose_context(smol, None, 4, 200 * 2**20)  # room for 4 sequences' f16 cache
    per_seq = tight.value
    assert per_seq < smol.n_ctx_train and per_seq % 1024 == 0
    assert 4 * per_seq * smol.kv_bytes_per_token("f16") <= 200 * 2**20
    assert "4 sequences" in tight.reasons[0]


def test_yarn_only_past_the_trained_context(smol):
    assert choose_rope(smol, smol.n_ctx_train).value == ("none", 1.0)
    r = choose_rope(smol, 16 * smol.n_ctx_train)
    assert r.value == ("yarn", 16.0) and "YaRN" in r.reasons[0]


def test_window_layers_get_a_full_size_cache_only_when_it_is_cheap(gemma, smol):
    def kv(t: str, full: bool) -> int:
        return gemma.kv_cache_bytes(32768, t, t, swa_full=full)

    roomy = choose_swa(gemma, kv, 64 * GiB, gemma.file_bytes, 0, None)
    tight = choose_swa(gemma, kv, kv("f16", False) + gemma.file_bytes + 2**20, gemma.file_bytes,
                       0, None)
    assert roomy.value is True and tight.value is False
    assert "window" in roomy.reasons[0]
    assert choose_swa(smol, kv, GiB, 0, 0, None).value is False  # no window layers


def test_the_cache_type_is_f16_when_it_fits_else_the_first_quantised_that_does():
    mem = Memory(4 * GiB)
    dev = Device(False, "cpu", 1000, 0)
    sizes = {"f16": 900, "q8_0": 500, "q4_0": 260}
    got = choose_cache(mem, dev, sizes.__getitem__, weights=400, compute=50, kv_type=None)
    assert got.value == ("q8_0", None) and "KV f16" in got.reasons[0]
    assert choose_cache(mem, dev, sizes.__getitem__, 400, 50, "q4_0").value == ("q4_0", None)
    assert choose_cache(mem, dev, lambda t: 10_000, 400, 50, None).value == (None, None)


def test_a_model_too_big_for_one_gpu_is_split_by_layer_over_two():
    mem = Memory(64 * GiB, (h100(0, 40), h100(1, 40)), gpu_offload=True)
    dev = choose_device(mem, None).value
    got = choose_cache(mem, dev, lambda t: 20 * GiB, weights=45 * GiB, compute=GiB, kv_type=None)
    kind, placed = got.value
    assert kind == "f16" and placed.split_mode == "layer" and len(placed.gpu_bytes) == 2
    assert "split over GPU 0" in split_reasons(mem, placed)[0]


def test_partial_offload_puts_the_layers_that_fit_on_the_gpu(smol):
    mem = Memory(64 * GiB, (h100(),), gpu_offload=True)
    dev = Device(True, "cuda", smol.file_bytes // 2, 0)
    got = choose_partial_offload(smol, mem, dev, lambda t: 0, smol.file_bytes, 0, None)
    kind, n_gpu = got.value
    assert kind == "f16" and 0 < n_gpu < smol.n_layer and "rest run on the CPU" in got.reasons[0]


def test_gpu_layers_are_all_unless_fewer_are_asked(smol):
    dev = Device(True, "cuda", 10 * GiB, 0)
    one = Placement("none", 0, (), ((0, GiB),))
    assert choose_gpu_layers(smol, dev, one, 0, None).value == smol.n_layer + 1
    assert choose_gpu_layers(smol, dev, one, 0, 5).value == 5
    assert choose_gpu_layers(smol, Device(False, "cpu", GiB, 0), None, 0, None).value == 0


def test_the_cache_reason_says_why_that_type():
    assert "fits" in cache_reasons("f16", None, GiB)[0]
    assert "smallest quality loss" in cache_reasons("q8_0", None, GiB)[0]
    assert "as requested" in cache_reasons("q4_0", "q4_0", GiB)[0]
    assert "flash attention on" in cache_reasons("f16", None, GiB)[1]


def _gpus(cap: float, switch: bool = True) -> tuple[Memory, Device]:
    gpu = GPU(0, "NVIDIA GPU", 79 * GiB, 80 * GiB, compute_cap=cap)
    mem = Memory(64 * GiB, (gpu,), gpu_offload=True, kernel_switch=switch)
    return mem, choose_device(mem, None).value


def test_prompt_kernels_go_to_cublas_only_where_measured_faster_and_the_build_can_switch(monkeypatch):
    monkeypatch.delenv("GGML_CUDA_CUBLAS_MIN_BATCH", raising=False)
    hopper, dev = _gpus(9.0)
    auto = choose_prompt_kernels(hopper, dev)
    assert auto.value == 128 and "cuBLAS for products of 128+ rows" in auto.reasons[0]
    ampere, dev8 = _gpus(8.0)
    older = choose_prompt_kernels(ampere, dev8)
    assert older.value == 0 and "compute capability 8.0 < 9.0" in older.reasons[0]
    assert choose_prompt_kernels(ampere, dev8, "cublas").value == 128  # asked for
    assert choose_prompt_kernels(hopper, dev, "mmq").value == 0
    stock, devs = _gpus(9.0, switch=False)  # a llama.cpp build without the patch
    no = choose_prompt_kernels(stock, devs, "cublas")
    assert no.value == 0 and "native/build-cuda.sh" in no.reasons[0]
    cpu = Memory(8 * GiB)
    assert choose_prompt_kernels(cpu, choose_device(cpu, None).value) == choose_prompt_kernels(
        cpu, choose_device(cpu, None).value, "cublas") and choose_prompt_kernels(
        cpu, choose_device(cpu, None).value).value == 0
    with pytest.raises(UsageError, match="prompt_kernels 'fast'"):
        choose_prompt_kernels(hopper, dev, "fast")


def test_a_kernel_threshold_set_by_the_user_is_what_the_plan_reports(monkeypatch, smol):
    hopper, dev = _gpus(9.0)
    monkeypatch.setenv("GGML_CUDA_CUBLAS_MIN_BATCH", "512")
    d = choose_prompt_kernels(hopper, dev, "mmq")
    assert d.value == 512 and "from the environment" in d.reasons[0]
    monkeypatch.setenv("GGML_CUDA_CUBLAS_MIN_BATCH", "many")
    assert choose_prompt_kernels(hopper, dev).value == 0
    monkeypatch.delenv("GGML_CUDA_CUBLAS_MIN_BATCH")
    plan = make_plan(smol, hopper, 4096)
    assert plan.cublas_min_batch == 128 and "prompts on cuBLAS from 128 rows" in plan.summary()
    assert plan.as_dict()["cublas_min_batch"] == 128
    assert make_plan(smol, hopper, 4096, prompt_kernels="mmq").cublas_min_batch == 0


def test_cublas_prompts_get_large_micro_batches_where_the_cache_still_fits(monkeypatch, smol):
    monkeypatch.delenv("LCDOC_UBATCH", raising=False)
    monkeypatch.delenv("GGML_CUDA_CUBLAS_MIN_BATCH", raising=False)
    hopper, dev = _gpus(9.0)
    d = choose_batch(True, 128)
    assert d.value == (2048, 2048) and "2048 tokens" in d.reasons[0]
    assert choose_batch(True, 0).value == (2048, 512)  # MMQ gains nothing past 512 rows
    assert choose_batch(False, 0).value == (512, 512)
    tight = choose_batch(True, 128, roomy=lambda ub: ub <= 512)
    assert tight.value == (2048, 512) and "no room for an f16 cache" in tight.reasons[0]
    assert make_plan(smol, hopper, 4096).n_ubatch == 2048
    assert make_plan(smol, hopper, 4096, prompt_kernels="mmq").n_ubatch == 512
    long = choose_batch(True, 128, 131072)  # 80K tokens were measured slower at 2048
    assert long.value == (2048, 512) and "measured slower" in long.reasons[0]
    assert make_plan(smol, hopper, 65536).n_ubatch == 512
    # a GPU with room for the weights and an f16 cache beside the smaller buffer only
    small = GPU(0, "small GPU", int(1.2 * GiB), 2 * GiB, compute_cap=9.0)
    plan = make_plan(smol, Memory(64 * GiB, (small,), gpu_offload=True, kernel_switch=True), 8192)
    assert plan.n_ubatch == 512 and plan.type_k == "f16"
    # side by side, one step carries several documents' prompts: 4096-row micro-batches
    side = choose_batch(True, 128, 4096, n_seq=8)
    assert side.value == (4096, 4096) and "8 sequences side by side" in side.reasons[0]
    assert choose_batch(True, 0, 4096, n_seq=8).value == (2048, 512)  # MMQ: no gain
    assert choose_batch(True, 128, 65536, n_seq=8).value == (2048, 512)  # long: attention
    assert choose_batch(True, 128, 4096, roomy=lambda ub: ub <= 2048, n_seq=8).value == (2048, 2048)
    assert make_plan(smol, hopper, 4096, n_seq=8).n_ubatch == 4096
    assert make_plan(smol, hopper, 4096, n_seq=1).n_ubatch == 2048
    monkeypatch.setenv("LCDOC_UBATCH", "256")
    assert make_plan(smol, hopper, 4096).n_ubatch == 256


def test_weights_are_mapped_unless_reading_is_asked_for(monkeypatch, smol):
    monkeypatch.delenv("LCDOC_LOAD", raising=False)
    hopper, dev = _gpus(9.0)
    whole = make_plan(smol, hopper, 4096)  # reading was measured no faster on an H200
    assert whole.use_mmap is True and whole.llama_kwargs(smol)["use_mmap"] is True
    assert make_plan(smol, Memory(8 * GiB), 4096).use_mmap is True
    monkeypatch.setenv("LCDOC_LOAD", "read")
    read = make_plan(smol, hopper, 4096)
    assert read.use_mmap is False and "LCDOC_LOAD" in read.reasons[-1]
    assert choose_load().value is False
