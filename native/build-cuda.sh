#!/usr/bin/env bash
# Build llama-cpp-python against a CUDA build of its own vendored llama.cpp, with one compile that
# also yields llama.cpp's llama-bench (for raw figures next to lcdoc's).
#
#   native/build-cuda.sh [SDIST.tar.gz|SRC_DIR]      default: pip download llama-cpp-python==$LCP_VERSION
#
# Environment: CUDA_ARCH (default: from nvidia-smi, e.g. 90 for H100), JOBS (default: nproc),
# BUILD_DIR (default: native/build), PYTHON (default: python3), LCP_VERSION (default 0.3.36).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
LCP_VERSION=${LCP_VERSION:-0.3.36}
BUILD_DIR=${BUILD_DIR:-$here/build}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$BUILD_DIR"

src=${1:-}
if [ -z "$src" ]; then
  "$PYTHON" -m pip download --no-deps --no-binary :all: -d "$BUILD_DIR" "llama-cpp-python==$LCP_VERSION"
  src=$(ls "$BUILD_DIR"/llama_cpp_python-*.tar.gz | head -1)
fi
if [ -f "$src" ]; then
  tar xzf "$src" -C "$BUILD_DIR"
  src=$(ls -d "$BUILD_DIR"/llama_cpp_python-*/ | head -1)
fi
src=$(cd "$src" && pwd)

if [ -z "${CUDA_ARCH:-}" ]; then
  CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
fi
echo "building llama.cpp from $src for CUDA architecture $CUDA_ARCH with $JOBS jobs" >&2

# GGML_CUDA: the CUDA backend. Flash-attention kernels for same-type K/V caches (f16, q8_0, q4_0)
# are built by default, which is all lcdoc's planner uses (type_k == type_v); set
# GGML_CUDA_FA_ALL_QUANTS=ON for mixed pairs at several times the compile time.
cmake -S "$src/vendor/llama.cpp" -B "$BUILD_DIR/cmake" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF ${EXTRA_CMAKE_ARGS:-} >&2
cmake --build "$BUILD_DIR/cmake" -j "$JOBS" --target llama llama-bench >&2

# The Python package without compiling llama.cpp a second time; its libraries are ours.
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$PYTHON" -m pip install --no-build-isolation \
  --no-deps --force-reinstall ${PIP_TARGET:+--target "$PIP_TARGET"} "$src" >&2
pkg=$(PYTHONPATH=${PIP_TARGET:-} "$PYTHON" - <<'PY'
import importlib.util, os
print(os.path.dirname(importlib.util.find_spec("llama_cpp").origin))
PY
)
mkdir -p "$pkg/lib"
find "$BUILD_DIR/cmake" -name 'lib*.so*' \( -path '*/bin/*' -o -path '*/src/*' -o -path '*/ggml/src/*' \) \
  -exec cp -P {} "$pkg/lib/" \;
cp "$BUILD_DIR/cmake/bin/llama-bench" "$BUILD_DIR/" 2>/dev/null || true

# The check: this build must offload to the GPU and have quantised-cache flash-attention kernels.
PYTHONPATH=${PIP_TARGET:-} "$PYTHON" - <<'PY'
import llama_cpp, sys
ok = llama_cpp.llama_supports_gpu_offload()
info = llama_cpp.llama_print_system_info().decode()
print(f"llama-cpp-python {llama_cpp.__version__}: GPU offload {'yes' if ok else 'NO'}")
print(info)
sys.exit(0 if ok else 1)
PY
echo "llama-bench: $BUILD_DIR/llama-bench" >&2
