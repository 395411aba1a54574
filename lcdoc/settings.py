"""One source for every setting: defaults, then the config file, then LCDOC_* variables, then flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lcdoc.errors import UsageError

CONFIG_PATH = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "lcdoc" / "config.toml"


def default_index_dir() -> Path:
    # indexes/ of the working directory when it is an lcdoc checkout, else the user's data folder.
    here = Path.cwd() / "indexes"
    if here.is_dir():
        return here
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "lcdoc" / "indexes"


@dataclass(frozen=True)
class Settings:
    """Every tunable in one place, so the CLI, the config file and the environment agree."""

    index_dir: Path = field(default_factory=default_index_dir)
    model: Path | None = None  # GGUF; None means the packaged SmolLM2
    embed_model: Path | None = None  # sentence-transformers folder; None means packaged MiniLM
    ctx: int | None = None  # requested context; None means the model's native context
    chunk_tokens: int = 256  # MiniLM truncates at 256 word pieces, so a chunk never exceeds it
    chunk_overlap: int = 32
    max_file_mb: float = 200.0
    answer_tokens: int = 384
    gpu_layers: int | None = None  # None: the planner decides
    kv_type: str | None = None  # force f16 / q8_0 / q4_0
    threads: int | None = None
    prompt_cache_gb: float | None = None  # disk for saved document states; None: 1/4 of free space
    embed_runtime: str | None = None  # onnx / torch; None: ONNX Runtime, PyTorch for fp32 on a GPU
    embed_precision: str | None = None  # new indexes: int8 or fp32 (default: int8 without a GPU)
    gpu_memory_gb: float | None = None  # plan at most this much of each GPU (shared GPUs); None: all free
    history: bool = True  # record every answer in the history database (lcdoc log)
    # An escalation predicted to take an answer past this many seconds is not taken (and said);
    # None: 600 on a GPU, 120 on a CPU (lcdoc.qa.ask).
    max_seconds: float | None = None
    # Prompt-sized matrix products on an NVIDIA GPU: "auto" (cuBLAS where measured faster, with
    # a build that can switch), "mmq" (llama.cpp's quantised kernels throughout) or "cublas".
    prompt_kernels: str = "auto"

    @property
    def prompt_cache_bytes(self) -> int | None:
        return int(self.prompt_cache_gb * 2**30) if self.prompt_cache_gb is not None else None

    def replace(self, **changes: Any) -> "Settings":
        """A copy with the given non-None changes applied (flags left unset keep lower layers)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def coerce(name: str, raw: Any) -> Any:
    """A setting's value from text (the config file, the environment, the wire) as its type."""
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if raw is None:
        return None
    try:
        if "bool" in str(kind):
            if isinstance(raw, bool):
                return raw
            if str(raw).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "Path" in str(kind):
            return Path(str(raw)).expanduser()
        if "int" in str(kind):
            return int(raw)
        if "float" in str(kind):
            return float(raw)
    except ValueError as e:
        raise UsageError(f"setting {name}: {raw!r} is not a valid value") from e
    return str(raw)


def load_settings(config_path: Path | None = None, **flags: Any) -> Settings:
    """Settings from defaults < config file < LCDOC_* environment < explicit flags."""
    values: dict[str, Any] = {}
    path = config_path or Path(os.environ.get("LCDOC_CONFIG", CONFIG_PATH))
    names = {f.name for f in fields(Settings)}
    if path.is_file():
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML ({e})") from e
        for k, v in data.items():
            if k not in names:
                raise UsageError(f"{path}: unknown setting {k!r}")
            values[k] = coerce(k, v)
    for k in names:
        env = os.environ.get(f"LCDOC_{k.upper()}")
        if env:
            values[k] = coerce(k, env)
    values.update({k: v for k, v in flags.items() if v is not None})
    return Settings(**values)
