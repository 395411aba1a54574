"""Sentence embeddings with the packaged MiniLM (or any sentence-transformers folder).

Two runtimes give the same vectors: ONNX Runtime on an export of the model (no torch: queries
start in a fraction of a second, and CPU indexing runs the int8 export), and PyTorch through
sentence-transformers (indexing on a GPU). An index records its precision, and every later
query and update embeds with the same one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lcdoc.errors import ModelMissingError, UsageError
from lcdoc.index.onnx_export import ExportError, model_identity  # noqa: F401


def resolve_embedding_model(model_dir: Path | str | None) -> Path:
    from lcdoc.models import find_embedding_model

    return Path(model_dir) if model_dir else find_embedding_model()


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _model_folder(model_dir: Path | None) -> Path:
    folder = resolve_embedding_model(model_dir)
    if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
        raise ModelMissingError(f"{folder}: not a sentence-transformers model folder")
    return folder


class OnnxEmbedder:
    """The model's ONNX export run by ONNX Runtime, tokenised by its own tokenizer.json."""

    backend = "onnx"

    def __init__(self, model_dir: Path | None = None, precision: str = "fp32") -> None:
        import json

        from lcdoc.index.onnx_export import PRECISIONS, ensure_export, export_dir, is_complete

        if precision not in PRECISIONS:
            raise ModelMissingError(f"embedding precision {precision!r}: one of {', '.join(PRECISIONS)}")
        _offline()
        folder = _model_folder(model_dir)
        out = export_dir(folder)
        if not is_complete(out):
            out = ensure_export(folder)  # once per model: needs torch
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((out / "export.json").read_text())
        self.inputs, self.pooling, self.dim = meta["inputs"], meta["pooling"], int(meta["dim"])
        self.tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(meta["max_tokens"]))
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(out / f"{precision}.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.name = model_identity(folder)
        self.precision = precision
        self.batch_size = 32

    def _encode(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask,
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        tokens = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        m = mask[..., None].astype(np.float32)
        if self.pooling == "cls":
            v = tokens[:, 0]
        elif self.pooling == "max":
            v = np.where(m > 0, tokens, -1e9).max(axis=1)
        else:
            v = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Normalised float32 vectors, one row per text (batched by length: less padding)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            out[idx] = self._encode([texts[i] for i in idx])
            if on_batch:
                on_batch(len(idx))
        return out


class TorchEmbedder:
    """Owns one sentence-transformers model; vectors come out L2-normalised for inner product."""

    backend = "torch"
    precision = "fp32"

    def __init__(self, model_dir: Path | None = None) -> None:
        _offline()
        folder = _model_folder(model_dir)
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Big batches feed a GPU; on a CPU, 32 keeps padding waste low at the same throughput.
        self.batch_size = 256 if self.device == "cuda" else 32
        self.model = SentenceTransformer(str(folder), device=self.device, local_files_only=True)
        self.name = model_identity(folder)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Normalised float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        step = self.batch_size * 4
        for i in range(0, len(texts), step):
            part = list(texts[i : i + step])
            out.append(
                self.model.encode(part, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
            )
            if on_batch:
                on_batch(len(part))
        return np.vstack(out).astype(np.float32)


Embedder = OnnxEmbedder | TorchEmbedder


@lru_cache(maxsize=1)
def gpu_present() -> bool:
    """A CUDA GPU, asked of nvidia-smi once per process (importing torch to ask costs seconds)."""
    from lcdoc.engine.system import nvidia_gpus

    return bool(nvidia_gpus())


@lru_cache(maxsize=4)
def get_embedder(model_dir: str | None = None, precision: str = "fp32",
                 for_indexing: bool = False, runtime: str | None = None) -> Embedder:
    """One embedder per process and precision. fp32 indexing on a GPU runs PyTorch on CUDA (the
    same numbers as the fp32 export, within float noise); everything else runs the export. The
    embed_runtime setting forces one; a model that cannot be exported runs on PyTorch at fp32."""
    path = Path(model_dir) if model_dir else None
    if runtime not in (None, "onnx", "torch"):
        raise UsageError(f"embed_runtime {runtime!r}: onnx or torch")
    if runtime == "torch" or (runtime is None and for_indexing and precision == "fp32"
                              and gpu_present()):
        emb = TorchEmbedder(path)
        if runtime == "torch" or emb.device == "cuda":
            return _same_precision(emb, precision)
    try:
        return OnnxEmbedder(path, precision)
    except ExportError as e:
        if precision != "fp32":
            raise ModelMissingError(f"{e}; an index of this model can only be built at fp32 "
                                    f"(embed_precision = \"fp32\")") from e
        return TorchEmbedder(path)


def _same_precision(emb: TorchEmbedder, precision: str) -> TorchEmbedder:
    if precision != emb.precision:
        raise UsageError(f"this index holds {precision} vectors; PyTorch embeds at fp32 only: "
                         f"use embed_runtime = \"onnx\" for it")
    return emb
