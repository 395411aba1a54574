"""A model's attention shape from its GGUF metadata, and what its KV cache costs per token."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lcdoc.engine.gguf import read_metadata
from lcdoc.errors import ModelMissingError

# Bytes per cached element. q8_0 and q4_0 store blocks of 32 values with one f16 scale:
# 32 + 2 = 34 bytes and 16 + 2 = 18 bytes per 32 values.
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# Interleaved sliding-window layouts llama.cpp applies by architecture when the GGUF does not list
# them: with pattern n, layer i uses the window unless (i + 1) % n == 0.
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2, "exaone4": 4}

# llama.cpp pads cache sizes to this many cells (flash attention kernels need it).
CELL_PAD = 256


def pad(n: int, to: int = CELL_PAD) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Arch:
    """What the planner needs to know about a model, read from its GGUF."""

    path: str
    arch: str
    name: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    rope_freq_base: float
    rope_scaling_type: str | None
    rope_scaling_factor: float | None
    sliding_window: int | None
    swa_layers: tuple[int, ...]  # indices of the layers that attend only to the window
    n_vocab: int
    file_bytes: int
    has_chat_template: bool
    n_ff: int = 0  # feed-forward width (0: not in the GGUF)

    @property
    def attention_cost(self) -> float:
        """a: a prompt token at position p costs (1 + a*p) times one at position 0. Attention
        over p earlier tokens is 2*heads*(d_k + d_v)*p FLOPs a full-attention layer, against 2 a
        weight for the matrix products (window layers are left out: their attention is bounded).
        On an H200 this predicted the 8B shape's 2K/32K prefill speed ratio as 1.56; measured 1.52."""
        n_ff = self.n_ff or int(3.5 * self.n_embd)
        q, o = self.n_head * self.head_dim_k, self.n_head * self.head_dim_v
        kv = self.n_head_kv * (self.head_dim_k + self.head_dim_v)
        weights = self.n_layer * (self.n_embd * (q + kv + o) + 3 * self.n_embd * n_ff)
        full = self.n_layer - len(self.swa_layers)
        return full * self.n_head * (self.head_dim_k + self.head_dim_v) / weights

    @property
    def head_dim(self) -> int:
        return self.head_dim_k

    @property
    def gqa_ratio(self) -> float:
        """Query heads per KV head: the factor by which GQA shrinks the cache against MHA."""
        return self.n_head / self.n_head_kv

    def kv_bytes_per_token_layer(self, type_k: str = "f16", type_v: str | None = None) -> float:
        type_v = type_v or type_k
        return self.n_head_kv * (self.head_dim_k * KV_TYPE_BYTES[type_k]
                                 + self.head_dim_v * KV_TYPE_BYTES[type_v])

    def kv_bytes_per_token(self, type_k: str = "f16", type_v: str | None = None) -> float:
        """2 x layers x kv_heads x head_dim x bytes, as if every layer saw the whole context."""
        return self.n_layer * self.kv_bytes_per_token_layer(type_k, type_v)

    def swa_cells(self, n_ctx: int, n_ubatch: int = 512, n_seq: int = 1) -> int:
        """Cells llama.cpp gives window layers: the window plus one micro-batch, padded, capped at n_ctx."""
        if not self.sliding_window:
            return n_ctx
        return min(pad(n_ctx), pad(min(n_ctx, self.sliding_window * n_seq + n_ubatch)))

    def kv_cache_bytes(self, n_ctx: int, type_k: str = "f16", type_v: str | None = None,
                       swa_full: bool = False, n_ubatch: int = 512, n_seq: int = 1) -> int:
        """The whole cache at a context: full layers hold n_ctx cells, window layers their window."""
        per_layer = self.kv_bytes_per_token_layer(type_k, type_v)
        cells = pad(n_ctx)
        n_swa = len(self.swa_layers)
        swa = cells if swa_full else self.swa_cells(n_ctx, n_ubatch, n_seq)
        return int(per_layer * ((self.n_layer - n_swa) * cells + n_swa * swa))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["head_dim"] = self.head_dim
        d["gqa_ratio"] = self.gqa_ratio
        return d


def _first(v: Any) -> Any:
    # Some GGUFs store per-layer arrays (e.g. head_count_kv varying by layer); the max is the cost.
    return max(v) if isinstance(v, list) and v else v


def read_arch(path: str | Path) -> Arch:
    """Arch of any GGUF model, from metadata alone."""
    meta = read_metadata(path)
    arch = meta.get("general.architecture")
    if not arch:
        raise ModelMissingError(f"{path}: GGUF has no general.architecture")

    def key(name: str, default: Any = None) -> Any:
        return _first(meta.get(f"{arch}.{name}", default))

    n_layer = key("block_count")
    n_head = key("attention.head_count")
    n_embd = key("embedding_length")
    if not (n_layer and n_head and n_embd):
        raise ModelMissingError(f"{path}: not a text-generation model ({arch}: no attention heads)")
    n_head_kv = key("attention.head_count_kv", n_head) or n_head
    head_k = key("attention.key_length", n_embd // n_head)
    head_v = key("attention.value_length", head_k)
    window = key("attention.sliding_window")
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if window:
        if isinstance(pattern, list):
            swa = tuple(i for i, on in enumerate(pattern) if on)
        else:
            n = int(pattern) if isinstance(pattern, int) and pattern > 0 else SWA_PATTERNS.get(arch, 1)
            # n == 1 with a window means every layer slides (Mistral-style).
            swa = tuple(i for i in range(n_layer) if n == 1 or (i + 1) % n != 0)
    else:
        swa = ()
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = int(str(tokens).split()[-1].rstrip(">")) if isinstance(tokens, str) else len(tokens or [])
    return Arch(
        path=str(path),
        arch=arch,
        name=str(meta.get("general.name", Path(path).stem)),
        n_layer=int(n_layer),
        n_head=int(n_head),
        n_head_kv=int(n_head_kv),
        n_embd=int(n_embd),
        head_dim_k=int(head_k),
        head_dim_v=int(head_v),
        n_ctx_train=int(key("context_length", 2048)),
        rope_freq_base=float(key("rope.freq_base", 10000.0)),
        rope_scaling_type=key("rope.scaling.type"),
        rope_scaling_factor=key("rope.scaling.factor"),
        sliding_window=int(window) if window else None,
        swa_layers=swa,
        n_vocab=n_vocab,
        file_bytes=Path(path).stat().st_size,
        has_chat_template="tokenizer.chat_template" in meta,
        n_ff=int(key("feed_forward_length", 0) or 0),
    )
