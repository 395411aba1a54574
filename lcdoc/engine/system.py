"""How much memory this machine can give a model: GPU (when llama.cpp has CUDA) or RAM."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, replace
from functools import lru_cache


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    free_bytes: int
    total_bytes: int
    limited: bool = False  # free_bytes was lowered to the gpu_memory_gb setting
    compute_cap: float = 0.0  # CUDA compute capability (9.0: Hopper); 0 when unknown


@dataclass(frozen=True)
class Memory:
    """Free memory the planner may spend; gpus is empty for a CPU-only build or machine."""

    ram_available_bytes: int
    gpus: tuple[GPU, ...] = ()
    gpu_offload: bool = False  # llama.cpp was built with a GPU backend
    kernel_switch: bool = False  # the build reads GGML_CUDA_CUBLAS_MIN_BATCH (native/patches)

    @property
    def on_gpu(self) -> bool:
        return self.gpu_offload and bool(self.gpus)


def ram_available() -> int:
    """MemAvailable, capped by a cgroup memory limit when the process runs in one."""
    avail = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        import os

        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail


def nvidia_gpus() -> tuple[GPU, ...]:
    """GPUs, their free memory and compute capability from nvidia-smi (no CUDA library needed in
    this process); a driver that does not know compute_cap is asked without it."""
    if not shutil.which("nvidia-smi"):
        return ()
    for fields in ("index,name,memory.free,memory.total,compute_cap", "index,name,memory.free,memory.total"):
        try:
            run = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ()
        if run.returncode == 0:
            return tuple(g for g in (_gpu(line) for line in run.stdout.strip().splitlines()) if g)
    return ()


def _gpu(line: str) -> GPU | None:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) not in (4, 5):
        return None
    try:
        cap = float(parts[4]) if len(parts) == 5 else 0.0
    except ValueError:
        cap = 0.0
    return GPU(int(parts[0]), parts[1], int(parts[2]) * 2**20, int(parts[3]) * 2**20, compute_cap=cap)


def gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp can offload to a GPU (a CUDA build)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def kernel_switch_supported() -> bool:
    """Whether this llama.cpp build lists CUBLAS_MIN_BATCH among its CUDA features: built by
    native/build-cuda.sh with native/patches/cublas-min-batch.patch."""
    import llama_cpp

    return b"CUBLAS_MIN_BATCH" in llama_cpp.llama_print_system_info()


def limit_gpus(gpus: tuple[GPU, ...], limit_bytes: int | None) -> tuple[GPU, ...]:
    """Each GPU's free memory lowered to the user's limit (a GPU shared with other jobs)."""
    if not limit_bytes:
        return gpus
    return tuple(replace(g, free_bytes=limit_bytes, limited=True) if g.free_bytes > limit_bytes else g
                 for g in gpus)


@lru_cache(maxsize=1)
def probe_memory(gb: float | None = None) -> Memory:
    """Memory of this machine now (cached for the process), each GPU counted at most gb GB
    (the gpu_memory_gb setting, for a shared GPU)."""
    offload = gpu_offload_supported()
    gpus = nvidia_gpus() if offload else ()
    return Memory(ram_available(), limit_gpus(gpus, int(gb * 2**30) if gb else None), offload,
                  offload and kernel_switch_supported())
