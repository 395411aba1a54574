"""Checks behind `lcdoc doctor`: is everything lcdoc needs present and working on this machine?"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from lcdoc.settings import Settings


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_checks(settings: Settings) -> dict[str, tuple[bool | None, Any]]:
    """name -> (ok: True / False / None for informational, detail)."""
    from lcdoc import __version__
    from lcdoc.engine.plan import fmt_bytes
    from lcdoc.engine.system import gpu_offload_supported, nvidia_gpus, ram_available

    out: dict[str, tuple[bool | None, Any]] = {}
    out["lcdoc"] = (None, f"{__version__} on Python {platform.python_version()}")
    for dist in ("llama-cpp-python", "faiss-cpu", "sentence-transformers", "torch", "pypdf",
                 "python-docx", "python-pptx", "odfdo", "pypdfium2"):
        v = _version(dist)
        out[dist] = (v != "not installed" if dist != "faiss-cpu" or v != "not installed" else False, v)
    from lcdoc.ingest.ocr import HOW_TO, tesseract_version

    ocr = tesseract_version()
    out["OCR (Tesseract)"] = (None, f"tesseract {ocr}: scanned PDF pages are read" if ocr else
                              f"not installed: scanned PDFs are named, not read; {HOW_TO}")
    try:
        offload = gpu_offload_supported()
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
        out["llama.cpp GPU offload"] = (None, f"{'yes (CUDA build)' if offload else 'no (CPU build)'}"
                                              f"; {info}")
    except Exception as e:  # a broken native build
        out["llama.cpp GPU offload"] = (False, f"llama_cpp failed to load: {e}")
    gpus = nvidia_gpus()
    out["GPUs"] = (None, "; ".join(f"{g.index}: {g.name}, {fmt_bytes(g.free_bytes)} free of "
                                   f"{fmt_bytes(g.total_bytes)}"
                                   + (f", compute capability {g.compute_cap:.1f}" if g.compute_cap else "")
                                   for g in gpus) or "none found")
    if gpus:
        out["prompt kernels"] = _prompt_kernels(settings)
    out["RAM available"] = (None, fmt_bytes(ram_available()))
    from lcdoc.errors import LcdocError
    from lcdoc.models import find_embedding_model, find_packaged_gguf

    try:
        from lcdoc.engine.llm import resolve_model

        out["LLM"] = (True, str(resolve_model(settings.model)))
    except LcdocError as e:
        out["LLM"] = (False, str(e))
    try:
        out["embedding model"] = (True, str(settings.embed_model or find_embedding_model()))
    except LcdocError as e:
        out["embedding model"] = (False, str(e))
    try:
        out["packaged SmolLM2"] = (True, str(find_packaged_gguf()))
    except LcdocError as e:
        out["packaged SmolLM2"] = (False, str(e))
    d = settings.index_dir
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), d)
    writable = os.access(probe, os.W_OK)
    n = len([p for p in d.iterdir() if (p / "index.sqlite").exists()]) if d.is_dir() else 0
    out["index folder"] = (writable, f"{d} ({'writable' if writable else 'NOT writable'}, "
                                     f"{n} indexes)")
    return out


def _prompt_kernels(settings: Settings) -> tuple[bool | None, str]:
    """What the planner does with prompt-sized products on this machine, and why."""
    from lcdoc.engine.plan import choose_device, choose_prompt_kernels
    from lcdoc.engine.system import probe_memory
    from lcdoc.errors import LcdocError

    try:
        memory = probe_memory(settings.gpu_memory_gb)
        d = choose_prompt_kernels(memory, choose_device(memory, settings.gpu_layers).value,
                                  settings.prompt_kernels)
    except (LcdocError, OSError) as e:
        return False, str(e)
    return None, "; ".join(d.reasons) or "MMQ (no GPU in the plan)"
