"""Choose context, KV cache type, RoPE scaling, offload and SWA cache size from the model and the machine.

The rules, in order: keep the requested context; put every layer on the GPU when it fits; keep an
f16 cache when it fits (a quantised cache decodes slower: 37% on an H100, see docs/benchmarks.md),
else q8_0, else q4_0 (a quantised V cache needs flash attention, which is always on); scale RoPE
with YaRN when the context exceeds what the model was trained on. If nothing fits, say so with the
numbers before anything is loaded.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from lcdoc.engine.arch import Arch
from lcdoc.engine.system import Memory
from lcdoc.errors import DoesNotFitError, UsageError

KV_TYPES = ("f16", "q8_0", "q4_0")
# Leave this share of free memory unplanned: allocator slack, the OS, other processes.
HEADROOM = 0.85
MiB = 2**20


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MiB:.0f} MiB"


@dataclass(frozen=True)
class Plan:
    """Everything needed to construct llama.cpp's context, with the reasons for each choice."""

    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: bool
    rope_scaling: str  # "none" or "yarn"
    rope_factor: float
    n_gpu_layers: int
    swa_full: bool
    n_batch: int
    n_ubatch: int
    n_seq: int
    device: str  # "cpu" or "cuda"
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    budget_bytes: int
    reasons: tuple[str, ...] = field(default=())
    split_mode: str = "none"  # "none": one GPU (main_gpu); "layer": whole layers spread over GPUs
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # share of the layers per GPU, by device index
    gpu_bytes: tuple[tuple[int, int], ...] = ()  # (GPU index, bytes planned on it)
    # Matrix products of this many rows or more (prompt batches) go to cuBLAS, fewer stay on
    # MMQ/MMVQ (decoding); 0: MMQ throughout (GGML_CUDA_CUBLAS_MIN_BATCH, native/patches).
    cublas_min_batch: int = 0
    use_mmap: bool = True  # False: llama.cpp reads the file instead (LCDOC_LOAD=read, measuring)

    def as_dict(self) -> dict[str, Any]:
        """Every field, in JSON's types (`lcdoc plan --json`'s "plan")."""
        d = asdict(self)
        d.update(reasons=list(self.reasons), tensor_split=list(self.tensor_split),
                 gpu_bytes={str(i): b for i, b in self.gpu_bytes})
        return d

    def summary(self, swa: bool = False) -> str:
        """The plan in one line, as `lcdoc plan` prints it (swa: the model has window layers)."""
        rope = f"YaRN x{self.rope_factor:g}" if self.rope_scaling == "yarn" else "none"
        return (f"n_ctx {self.n_ctx:,}, KV {self.type_k}/{self.type_v} "
                f"({fmt_bytes(self.kv_cache_bytes)}), flash attention "
                f"{'on' if self.flash_attn else 'off'}, RoPE scaling {rope}, {self.device} with "
                f"{self.n_gpu_layers} GPU layers"
                f"{' (split over GPUs by layer)' if self.split_mode == 'layer' else ''}, "
                f"n_batch {self.n_batch}/n_ubatch {self.n_ubatch}"
                + (f", prompts on cuBLAS from {self.cublas_min_batch} rows"
                   if self.cublas_min_batch else "")
                + (f", swa_full {self.swa_full}" if swa else ""))

    def llama_kwargs(self, arch: Arch) -> dict[str, Any]:
        """Keyword arguments for llama_cpp.Llama implementing this plan."""
        import llama_cpp

        kw: dict[str, Any] = dict(
            n_ctx=self.n_ctx * self.n_seq, n_batch=self.n_batch, n_ubatch=self.n_ubatch,
            n_gpu_layers=self.n_gpu_layers, flash_attn=self.flash_attn, use_mmap=self.use_mmap,
            type_k=getattr(llama_cpp, f"GGML_TYPE_{self.type_k.upper()}"),
            type_v=getattr(llama_cpp, f"GGML_TYPE_{self.type_v.upper()}"),
        )  # n_seq: Llama() takes no n_seq_max; Engine sets it in the context defaults, and
        # llama.cpp gives each sequence n_ctx * n_seq / n_seq_max = n_ctx cells of its own
        if self.device == "cuda":
            kw["main_gpu"] = self.main_gpu
            kw["split_mode"] = (llama_cpp.LLAMA_SPLIT_MODE_LAYER if self.split_mode == "layer"
                                else llama_cpp.LLAMA_SPLIT_MODE_NONE)
            if self.split_mode == "layer":
                kw["tensor_split"] = list(self.tensor_split)
        if arch.swa_layers:
            kw["swa_full"] = self.swa_full
        if self.rope_scaling == "yarn":
            kw.update(rope_scaling_type=llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN,
                      rope_freq_scale=1.0 / self.rope_factor, yarn_orig_ctx=arch.n_ctx_train)
        return kw


# llama.cpp's n_ubatch, for measuring (docs/benchmarks.md): LCDOC_UBATCH=2048.
UBATCH_ENV = "LCDOC_UBATCH"


def compute_estimate(arch: Arch, n_ubatch: int, n_batch: int) -> int:
    """Working memory besides weights and cache: llama.cpp's compute graph and logits buffers.

    llama-cpp-python also keeps an n_batch x n_vocab float32 score array on the host.
    """
    graph = n_ubatch * (arch.n_vocab * 4 + arch.n_embd * 4 * 24) + 64 * MiB
    return graph + n_batch * arch.n_vocab * 4


@dataclass(frozen=True)
class Placement:
    """Where weights, cache and compute buffers go on the GPUs."""

    split_mode: str
    main_gpu: int
    tensor_split: tuple[float, ...]
    gpu_bytes: tuple[tuple[int, int], ...]


def place_on_gpus(gpus: tuple, weights: int, kv: int, compute: int) -> Placement | None:
    """One GPU when weights + cache + compute fit the one with most free memory; else whole
    layers spread over the GPUs in proportion to what each can take (llama.cpp's layer split:
    each GPU holds its layers' weights and cache, activations cross once per boundary); None
    when even all of them together are too small. Every GPU gets its own compute buffer."""
    best = max(gpus, key=lambda g: g.free_bytes)
    if weights + kv + compute <= int(best.free_bytes * HEADROOM):
        return Placement("none", best.index, (), ((best.index, weights + kv + compute),))
    room = {g.index: int(g.free_bytes * HEADROOM) - compute for g in gpus}
    usable = {i: r for i, r in room.items() if r > 0}
    if len(usable) < 2 or weights + kv > sum(usable.values()):
        return None
    total = sum(usable.values())
    split = tuple(round(usable.get(g.index, 0) / total, 4) for g in sorted(gpus, key=lambda g: g.index))
    planned = tuple((i, int(r / total * (weights + kv)) + compute) for i, r in sorted(usable.items()))
    return Placement("layer", best.index, split, planned)


@dataclass(frozen=True)
class Decision:
    """One rule's choice and the reasons it gives (none when there is nothing to say)."""

    value: Any
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Device:
    """Where the model runs and how many bytes may be planned there."""

    on_gpu: bool
    name: str  # "cpu" or "cuda"
    budget: int  # bytes of the GPU with the most free memory, or of RAM
    main_gpu: int


PROMPT_KERNELS = ("auto", "mmq", "cublas")
KERNEL_ENV = "GGML_CUDA_CUBLAS_MIN_BATCH"  # read once per process by the patched llama.cpp
# Products of this many rows or more go to cuBLAS: a 512-token prompt batch does, a decoding
# step of up to 127 sequences side by side does not (docs/benchmarks.md, "Prompt kernels").
CUBLAS_MIN_BATCH = 128
# Compute capability from which "auto" sends prompts to cuBLAS: measured faster there (H100,
# H200); on older GPUs MMQ stays, unmeasured.
CUBLAS_MIN_CAP = 9.0


def choose_prompt_kernels(memory: Memory, dev: Device, wanted: str = "auto") -> Decision:
    """The row count from which matrix products run on cuBLAS (dequantised f16 tensor-core
    GEMMs, faster for long prompts on Hopper) instead of MMQ; 0 for MMQ throughout. Decoding
    (a few rows a step) always stays on MMQ/MMVQ."""
    if wanted not in PROMPT_KERNELS:
        raise UsageError(f"prompt_kernels {wanted!r}: choose one of {', '.join(PROMPT_KERNELS)}")
    if not dev.on_gpu:
        return Decision(0)
    env = os.environ.get(KERNEL_ENV, "").strip()
    if env:
        n = int(env) if env.lstrip("-").isdigit() else 0
        return Decision(max(0, n), (f"prompt kernels: {KERNEL_ENV}={env} from the environment "
                                    "(the build reads it once per process)",))
    if not memory.kernel_switch:
        return Decision(0, (("prompt kernels: MMQ; " if wanted != "mmq" else "prompt kernels: MMQ, as "
                             "requested; ") + "this llama.cpp build cannot send prompts to cuBLAS "
                            "(native/build-cuda.sh builds one that can)",))
    cap = max((g.compute_cap for g in memory.gpus), default=0.0)
    if wanted == "mmq" or (wanted == "auto" and cap < CUBLAS_MIN_CAP):
        why = "as requested" if wanted == "mmq" else (
            f"compute capability {cap:.1f} < {CUBLAS_MIN_CAP:.1f}, where cuBLAS was not measured faster")
        return Decision(0, (f"prompt kernels: MMQ throughout ({why})",))
    return Decision(CUBLAS_MIN_BATCH, (
        f"prompt kernels: cuBLAS for products of {CUBLAS_MIN_BATCH}+ rows (prompt batches), MMQ "
        "below (decoding)" + (", as requested" if wanted == "cublas" else
                              f": faster and closer to the weights, measured on compute capability {cap:.1f}"),))


def check_request(n_ctx: int, n_seq: int, kv_type: str | None) -> None:
    """A context, sequence count and cache type that can be planned at all."""
    if n_seq < 1:
        raise UsageError(f"--parallel {n_seq}: at least one sequence")
    if n_ctx < 256:
        raise UsageError(f"--ctx {n_ctx}: a context under 256 tokens is not useful")
    if kv_type and kv_type not in KV_TYPES:
        raise UsageError(f"KV cache type {kv_type!r}: choose one of {', '.join(KV_TYPES)}")


def choose_device(memory: Memory, gpu_layers: int | None) -> Decision:
    """The GPU when llama.cpp can offload, there is one and offload is not turned off."""
    if memory.on_gpu and gpu_layers != 0:
        gpu = max(memory.gpus, key=lambda g: g.free_bytes)
        return Decision(Device(True, "cuda", int(gpu.free_bytes * HEADROOM), gpu.index), (
            "; ".join(f"GPU {g.index} {g.name}: {fmt_bytes(g.free_bytes)} "
                      + ("usable (the gpu_memory_gb limit)" if g.limited else "free")
                      for g in sorted(memory.gpus, key=lambda g: g.index))
            + f"; planning {HEADROOM:.0%} of each",))
    budget = int(memory.ram_available_bytes * HEADROOM)
    why = "llama.cpp built without GPU support" if not memory.gpu_offload else \
        ("no GPU found" if not memory.gpus else "offload disabled (--gpu-layers 0)")
    return Decision(Device(False, "cpu", budget, 0), (
        f"CPU ({why}): {fmt_bytes(memory.ram_available_bytes)} RAM available, planning "
        f"{fmt_bytes(budget)}",))


# Prompt rows per kernel launch when prompts run on cuBLAS: its GEMMs keep gaining past 512 rows
# (llama-bench, 8B shape on an H200: 32K prefill 12,423 tok/s at 512, 13,950 at 2048; eight 2.5K
# documents side by side 13.9 s against 15.2 s), MMQ's do not (8,737 and 9,284). Past
# CUBLAS_UBATCH_MAX_CTX attention dominates and the larger micro-batch lost (80K tokens through
# the console script: 11.1 s against 10.6 s), so long contexts keep 512.
CUBLAS_UBATCH = 2048
CUBLAS_UBATCH_MAX_CTX = 32768
# Side by side (several sequences, each of short context), one step carries the prompts of
# several documents: 4096-row micro-batches summarised 32 documents of 2-3K tokens at
# --parallel 8 in 13.0-14.0 s of model time against 13.8-14.8 s at 2048 (8B shape, H200, four
# runs each, alternating; docs/benchmarks.md).
SIDE_UBATCH = 4096


def choose_batch(on_gpu: bool, cublas_min_batch: int = 0, n_ctx: int = 0,
                 roomy: Callable[[int], bool] = lambda n_ubatch: True,
                 n_seq: int = 1) -> Decision:
    """(n_batch, n_ubatch): larger batches feed a GPU, and 2048-row micro-batches feed cuBLAS
    (4096 side by side) for contexts up to CUBLAS_UBATCH_MAX_CTX where their larger compute
    buffer still leaves an f16 cache room (roomy(n_ubatch)); LCDOC_UBATCH sets n_ubatch."""
    n_batch, n_ubatch = (2048, 512) if on_gpu else (512, 512)
    why: tuple[str, ...] = ()
    if on_gpu and cublas_min_batch and n_ctx > CUBLAS_UBATCH_MAX_CTX:
        why = (f"prompt micro-batches of {n_ubatch} tokens: past {CUBLAS_UBATCH_MAX_CTX} tokens "
               f"of context larger ones were measured slower (attention dominates)",)
    elif on_gpu and cublas_min_batch and n_seq > 1 and roomy(SIDE_UBATCH):
        n_batch = n_ubatch = SIDE_UBATCH
        why = (f"prompt micro-batches of {n_ubatch} tokens: {n_seq} sequences side by side feed "
               "several documents' prompts to cuBLAS in one step",)
    elif on_gpu and cublas_min_batch and roomy(CUBLAS_UBATCH):
        n_ubatch = CUBLAS_UBATCH
        why = (f"prompt micro-batches of {n_ubatch} tokens: cuBLAS's GEMMs are faster on larger "
               "ones (MMQ's are not)",)
    elif on_gpu and cublas_min_batch:
        why = (f"prompt micro-batches of {n_ubatch} tokens: {CUBLAS_UBATCH} would feed cuBLAS "
               "better, but its compute buffer would leave no room for an f16 cache",)
    if os.environ.get(UBATCH_ENV):  # prompt tokens per kernel launch: larger feeds cuBLAS better
        n_ubatch = max(32, int(os.environ[UBATCH_ENV]))
        n_batch = max(n_batch, n_ubatch)
        why = (f"prompt micro-batches of {n_ubatch} tokens ({UBATCH_ENV} from the environment)",)
    return Decision((n_batch, n_ubatch), why)


LOAD_ENV = "LCDOC_LOAD"  # "mmap" or "read": how the weights come off the file, for measuring


def choose_load() -> Decision:
    """Whether llama.cpp maps the file (use_mmap) or reads it through pinned buffers. Mapped:
    with every layer on an H200, reading was not faster (8B Q8_0 from the page cache, cold
    `lcdoc ask`: 3.5-4.1 s read against 3.0-4.0 s mapped), and with layers on the CPU the
    mapping keeps their weights in the page cache instead of a second copy. LCDOC_LOAD=read
    reads, for measuring."""
    env = os.environ.get(LOAD_ENV, "").strip().lower()
    if env in ("mmap", "read"):
        return Decision(env == "mmap", (f"weights loaded by {env} ({LOAD_ENV} from the environment)",))
    return Decision(True)


def choose_context(arch: Arch, requested: int | None, n_seq: int, room: int) -> Decision:
    """The context asked for (the native one by default). Side by side without a --ctx: the
    largest per-sequence context, up to the native one, whose f16 cache for every sequence fits
    the room beside the weights."""
    native = arch.n_ctx_train
    n_ctx = int(requested or native)
    if n_seq > 1 and requested is None:
        fit = int(room // (arch.kv_bytes_per_token("f16") * n_seq)) // 1024 * 1024
        n_ctx = max(1024, min(native, fit))
        return Decision(n_ctx, (f"{n_seq} sequences side by side in one cache: {n_ctx} tokens "
                                f"per sequence (the most up to the native {native} whose f16 "
                                f"cache fits)",))
    if n_seq > 1:
        return Decision(n_ctx, (f"{n_seq} sequences side by side of up to {n_ctx} tokens each: "
                                f"the cache holds {n_seq * n_ctx} cells",))
    return Decision(n_ctx)


def choose_rope(arch: Arch, n_ctx: int) -> Decision:
    """("yarn", factor) past the trained context, unless the GGUF carries its own scaling."""
    native = arch.n_ctx_train
    if n_ctx > native and not arch.rope_scaling_type:
        factor = n_ctx / native
        return Decision(("yarn", factor), (
            f"context {n_ctx} > trained {native}: YaRN RoPE scaling x{factor:g} (positions "
            f"become addressable; recall far from the end may drop)",))
    if arch.rope_scaling_type:
        return Decision(("none", 1.0), (f"model already carries {arch.rope_scaling_type} RoPE "
                                        f"scaling in its GGUF",))
    return Decision(("none", 1.0))


def choose_swa(arch: Arch, kv: Callable[[str, bool], int], budget: int, weights: int,
               compute: int, swa_full: bool | None) -> Decision:
    """Sliding-window layers: a full-size cache lets llama.cpp reuse a cached prefix in place
    past the window; a window-sized one saves memory, and lcdoc's prompt cache still works
    because it restores a snapshot taken exactly at the document boundary."""
    if not arch.swa_layers:
        return Decision(False)
    full_b, win_b = kv("f16", True), kv("f16", False)
    if swa_full is None:
        swa_full = (full_b - win_b) <= budget // 8 and weights + full_b + compute <= budget
    return Decision(bool(swa_full), (
        f"{len(arch.swa_layers)} of {arch.n_layer} layers use a {arch.sliding_window}-token "
        f"window: full-size cache {fmt_bytes(full_b)}, window-sized {fmt_bytes(win_b)}; chose "
        + ("full-size (in-place prefix reuse; the extra memory is small here)" if swa_full else
           "window-sized (memory; prompt cache restores snapshots taken at the prefix)"),))


def choose_cache(memory: Memory, dev: Device, kv: Callable[[str], int], weights: int,
                 compute: int, kv_type: str | None) -> Decision:
    """(KV type, Placement or None): the first cache type, f16 first, that fits with the weights;
    on GPUs, f16 spread over several before a quantised cache on one (quantised decodes
    slower). (None, None) when none fits whole."""
    reasons = []
    for t in [kv_type] if kv_type else list(KV_TYPES):
        if dev.on_gpu:
            placed = place_on_gpus(memory.gpus, weights, kv(t), compute)
            if placed is not None:
                return Decision((t, placed), tuple(reasons))
            where = (f"{fmt_bytes(sum(int(g.free_bytes * HEADROOM) for g in memory.gpus))} on "
                     f"{len(memory.gpus)} GPUs together" if len(memory.gpus) > 1
                     else fmt_bytes(dev.budget))
        elif kv(t) + compute + weights <= dev.budget:
            return Decision((t, None), tuple(reasons))
        else:
            where = fmt_bytes(dev.budget)
        reasons.append(f"KV {t}: {fmt_bytes(kv(t))} + weights {fmt_bytes(weights)} + "
                       f"compute {fmt_bytes(compute)} > {where}")
    return Decision((None, None), tuple(reasons))


def choose_partial_offload(arch: Arch, memory: Memory, dev: Device, kv: Callable[[str], int],
                           weights: int, compute: int, kv_type: str | None) -> Decision:
    """(KV type, GPU layers) when the whole model fits no GPU: as many layers on the GPU as fit
    with their share of the cache, the rest on the CPU; (None, 0) when even that fails."""
    t = kv_type or "f16"
    per_layer = (weights + kv(t)) / arch.n_layer
    n_gpu = int((dev.budget - compute) // per_layer)
    if n_gpu > 0 and weights + kv(t) <= memory.ram_available_bytes * HEADROOM + dev.budget:
        return Decision((t, n_gpu), (f"only {n_gpu} of {arch.n_layer} layers fit on the GPU "
                                     f"with a {t} cache: the rest run on the CPU",))
    return Decision((None, 0))


def choose_gpu_layers(arch: Arch, dev: Device, placed: Placement | None, n_fit: int,
                      gpu_layers: int | None) -> Decision:
    """Layers on the GPU: those asked for (--gpu-layers) when fewer than fit, else all of them
    (or the n_fit of a partial offload)."""
    if dev.on_gpu and gpu_layers is not None and 0 < gpu_layers <= arch.n_layer and (
            n_fit == 0 or gpu_layers < n_fit):
        return Decision(gpu_layers, (f"{gpu_layers} of {arch.n_layer} layers on the GPU, as "
                                     f"requested (--gpu-layers); the rest on the CPU",))
    if dev.on_gpu and n_fit == 0:
        split = placed is not None and placed.split_mode == "layer"
        return Decision(arch.n_layer + 1,  # every repeating layer plus the output layer
                        (f"all {arch.n_layer} layers on the GPU" + ("s" if split else ""),))
    return Decision(n_fit)


def split_reasons(memory: Memory, placed: Placement | None) -> tuple[str, ...]:
    """Why the layers are split over GPUs, or why one GPU holds the model alone."""
    if placed is not None and placed.split_mode == "layer":
        return ("does not fit one GPU: layers split over " + ", ".join(
            f"GPU {i} {share:.0%} ({fmt_bytes(b)} planned of "
            f"{fmt_bytes(next(g.free_bytes for g in memory.gpus if g.index == i))} usable)"
            for (i, b), share in zip(placed.gpu_bytes, [x for x in placed.tensor_split if x > 0]))
            + f" by free memory (split_mode layer; row split, tensor-parallel over PCIe/NVLink "
            f"for every matrix product, is not chosen); GPU {placed.main_gpu} is the main GPU",)
    if placed is not None and len(memory.gpus) > 1:
        return (f"fits GPU {placed.main_gpu} alone (the most free memory): no split",)
    return ()


def cache_reasons(chosen: str, kv_type: str | None, f16_bytes: int) -> tuple[str, ...]:
    if chosen == "f16":
        why = (f"KV cache f16: {fmt_bytes(f16_bytes)} fits (quantised caches decode slower; "
               f"used only when memory requires)")
    elif not kv_type:
        why = f"KV cache {chosen}: the smallest quality loss that fits"
    else:
        why = f"KV cache {chosen}: as requested"
    return (why, "flash attention on (required for a quantised V cache; less memory, faster "
                 "long prefill)")


def make_plan(
    arch: Arch,
    memory: Memory,
    n_ctx: int | None = None,
    kv_type: str | None = None,
    gpu_layers: int | None = None,
    n_seq: int = 1,
    swa_full: bool | None = None,
    prompt_kernels: str = "auto",
) -> Plan:
    """The settings for this model on this machine at this context, or DoesNotFitError with
    numbers: the rules above applied in order, each adding its reasons."""
    check_request(int(n_ctx or arch.n_ctx_train), n_seq, kv_type)
    device = choose_device(memory, gpu_layers)
    dev: Device = device.value
    kernels = choose_prompt_kernels(memory, dev, prompt_kernels)
    weights = arch.file_bytes
    asked = int(n_ctx or arch.n_ctx_train)

    def f16_fits(ub: int) -> bool:  # weights, an f16 cache and this micro-batch's buffers
        kv16 = arch.kv_cache_bytes(asked * n_seq, "f16", "f16", n_ubatch=ub, n_seq=n_seq)
        return weights + compute_estimate(arch, ub, max(2048, ub)) + kv16 <= dev.budget

    batch = choose_batch(dev.on_gpu, kernels.value, asked, f16_fits, n_seq)
    n_batch, n_ubatch = batch.value
    compute = compute_estimate(arch, n_ubatch, n_batch)
    ctx = choose_context(arch, n_ctx, n_seq, dev.budget - weights - compute)
    n_ctx = ctx.value
    rope = choose_rope(arch, n_ctx)

    def kv(t: str, full: bool) -> int:
        return arch.kv_cache_bytes(n_ctx * n_seq, t, t, swa_full=full, n_ubatch=n_ubatch,
                                   n_seq=n_seq)

    swa = choose_swa(arch, kv, dev.budget, weights, compute, swa_full)
    sized = lambda t: kv(t, swa.value)  # noqa: E731
    cache = choose_cache(memory, dev, sized, weights, compute, kv_type)
    (chosen, placed), offload = cache.value, Decision((None, 0))
    if chosen is None and dev.on_gpu:
        offload = choose_partial_offload(arch, memory, dev, sized, weights, compute, kv_type)
        chosen = offload.value[0]
    if chosen is None:
        raise DoesNotFitError(
            f"{arch.name} at {n_ctx} tokens"
            + (f" x {n_seq} sequences side by side" if n_seq > 1 else "")
            + f" does not fit: weights {fmt_bytes(weights)}, KV cache "
            f"{fmt_bytes(sized('q4_0'))} even at q4_0, compute {fmt_bytes(compute)}; "
            f"{fmt_bytes(dev.budget)} can be planned on the {dev.name}. Try a smaller --ctx "
            f"(about {max_ctx_that_fits(arch, dev.budget - weights - compute)} fits at q4_0).")
    layers = choose_gpu_layers(arch, dev, placed, offload.value[1], gpu_layers)
    load = choose_load()
    reasons = device.reasons + ctx.reasons + rope.reasons + swa.reasons + cache.reasons \
        + offload.reasons + layers.reasons + split_reasons(memory, placed) \
        + cache_reasons(chosen, kv_type, sized("f16")) + kernels.reasons + batch.reasons \
        + load.reasons
    return Plan(
        n_ctx=n_ctx, type_k=chosen, type_v=chosen, flash_attn=True, rope_scaling=rope.value[0],
        rope_factor=rope.value[1], n_gpu_layers=layers.value, swa_full=swa.value,
        n_batch=n_batch, n_ubatch=n_ubatch, n_seq=n_seq, device=dev.name, weights_bytes=weights,
        kv_cache_bytes=sized(chosen), compute_bytes=compute, budget_bytes=dev.budget,
        reasons=reasons, split_mode=placed.split_mode if placed else "none",
        main_gpu=placed.main_gpu if placed else dev.main_gpu,
        tensor_split=placed.tensor_split if placed else (),
        gpu_bytes=placed.gpu_bytes if placed else (), cublas_min_batch=kernels.value,
        use_mmap=load.value)


def cache_settings(plan: Plan) -> str:
    """The settings that shape a context's cache: a saved state or a calibration holds only for
    the same ones."""
    return (f"{plan.n_ctx}/{plan.type_k}/{plan.type_v}/{plan.rope_scaling}{plan.rope_factor}/"
            f"{plan.swa_full}/{plan.flash_attn}")


def max_ctx_that_fits(arch: Arch, kv_budget: int, kv_type: str = "q4_0") -> int:
    """Largest context (multiple of 256) whose cache fits a byte budget."""
    if kv_budget <= 0:
        return 0
    per_tok = arch.kv_bytes_per_token(kv_type)
    return max(0, int(kv_budget // per_tok) // 256 * 256)


def kv_table(arch: Arch, contexts: list[int], swa_full: bool = False) -> dict[int, dict[str, int]]:
    """Cache bytes at each context for each cache type (for `lcdoc plan`)."""
    return {c: {t: arch.kv_cache_bytes(c, t, t, swa_full=swa_full) for t in KV_TYPES}
            for c in contexts}


def plan_report(arch: Arch, plan: Plan) -> dict[str, Any]:
    """The `lcdoc plan --json` object."""
    return {
        "model": {
            "path": arch.path, "arch": arch.arch, "name": arch.name, "n_layer": arch.n_layer,
            "n_head": arch.n_head, "n_head_kv": arch.n_head_kv, "head_dim": arch.head_dim,
            "n_embd": arch.n_embd, "gqa_ratio": arch.gqa_ratio, "n_ctx_train": arch.n_ctx_train,
            "rope_freq_base": arch.rope_freq_base, "sliding_window": arch.sliding_window,
            "swa_layers": list(arch.swa_layers), "file_bytes": arch.file_bytes,
        },
        "kv_bytes_per_token": {t: arch.kv_bytes_per_token(t) for t in KV_TYPES},
        "kv_cache_bytes": {t: arch.kv_cache_bytes(plan.n_ctx * plan.n_seq, t, t, swa_full=plan.swa_full,
                                                  n_ubatch=plan.n_ubatch, n_seq=plan.n_seq)
                           for t in KV_TYPES},
        "plan": plan.as_dict(),
    }
