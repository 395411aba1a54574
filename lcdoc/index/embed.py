"""Sentence embeddings with the packaged MiniLM (or any sentence-transformers folder), on GPU if present."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lcdoc.errors import ModelMissingError


def model_identity(folder: Path) -> str:
    """A model's name as an index records it: its folder's name (the package's for a 'model'
    folder). Computed without loading the model, so a mismatch is caught before any work."""
    folder = Path(folder)
    return folder.parent.name if folder.name == "model" else folder.name


def resolve_embedding_model(model_dir: Path | str | None) -> Path:
    from lcdoc.models import find_embedding_model

    return Path(model_dir) if model_dir else find_embedding_model()


class Embedder:
    """Owns one sentence-transformers model; vectors come out L2-normalised for inner product."""

    def __init__(self, model_dir: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        folder = resolve_embedding_model(model_dir)
        if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
            raise ModelMissingError(f"{folder}: not a sentence-transformers model folder")
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


@lru_cache(maxsize=2)
def get_embedder(model_dir: str | None = None) -> Embedder:
    """One embedder per process: loading the model costs seconds."""
    return Embedder(Path(model_dir) if model_dir else None)
