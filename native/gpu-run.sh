#!/usr/bin/env bash
# What was run on the lent H100, in stages (each a separate device call, back to back, so the
# build under /root/work survives): build | models | bench-raw | bench-lcdoc.
# Expects the carry folder .carry/ (trimmed sdist, wheels, synth_gguf.py, SmolLM2 tokenizer).
set -uo pipefail
export PYTHONUNBUFFERED=1
W=/root/work; mkdir -p $W
OUT=${OUT:-$W/out}; mkdir -p $OUT
[ -d /tmp/site/gguf ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
export PYTHONPATH=/tmp/site:$PWD
B8=$W/llama3-8b.gguf; SMOL=$W/smollm2-135m.gguf
for stage in "$@"; do
  case $stage in
  stash)
    cp .gg-a/* $W/ ;;
  build)
    nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
    t0=$(date +%s)
    BUILD_DIR=$W/build PIP_TARGET=/tmp/site JOBS=16 native/build-cuda.sh .carry/lcp-trim.tar.gz 2>&1 | tail -15
    echo "build seconds: $(( $(date +%s) - t0 ))" ;;
  models)
    python3 .carry/synth_gguf.py $B8 --shape llama3-8b \
      --vocab $W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf 2>&1 | tail -2
    python3 .carry/synth_gguf.py $SMOL --shape smollm2-135m --vocab .carry/smollm2-vocab.gguf 2>&1 | tail -2
    ls -la $W/*.gguf ;;
  bench-raw)
    for kv in f16 q8_0; do
      $W/build/llama-bench -m $B8 -ngl 99 -fa 1 -ctk $kv -ctv $kv -p 32768,131072 -n 0 -r 1 -o md 2>&1 | grep -E '^\|'
      $W/build/llama-bench -m $B8 -ngl 99 -fa 1 -ctk $kv -ctv $kv -p 0 -n 64 -d 32768,131072 -r 1 -o md 2>&1 | grep -E '^\|'
    done ;;
  bench-lcdoc)
    python3 -m lcdoc.eval.speed --model $SMOL --ctx 32768,131072 --kv f16,q8_0 --json $OUT/speed-smol.json
    python3 -m lcdoc.eval.speed --model $B8 --ctx 32768,131072 --kv f16,q8_0 --json $OUT/speed-8b.json ;;
  niah)
    # The packaged SmolLM2 travels in two halves (.gg-a with the build call, .gg-b now).
    cp .gg-a/* $W/ 2>/dev/null; cp .gg-b/* $W/ 2>/dev/null
    cat $W/smol.part-aa $W/smol.part-ab $W/smol.part-ac > $W/SmolLM2-135M-Instruct.Q4_1.gguf
    echo "$(cat $W/sha256)  $W/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c || exit 1
    python3 -c "import llama_cpp, runpy; runpy.run_module('lcdoc.eval.niah', run_name='__main__')" --model $W/SmolLM2-135M-Instruct.Q4_1.gguf \
      --lengths ${NIAH_LENGTHS:-1k,2k,4k,8k,16k,32k,64k,127k} --depths 0,25,50,75,100 \
      --mode stuff --out $OUT/niah-gpu ;;
  esac
done
