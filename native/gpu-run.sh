#!/usr/bin/env bash
# What was run on the lent H100 (one call): build, synthesise the two model shapes, benchmark.
# Expects the carry folder .carry/ (trimmed sdist, wheels, synth_gguf.py, SmolLM2 vocab).
set -uo pipefail
export PYTHONUNBUFFERED=1
W=/root/work; mkdir -p $W
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/*.whl
export PYTHONPATH=/tmp/site:$PWD
if [ ! -f $W/built ]; then
  BUILD_DIR=$W/build PIP_TARGET=/tmp/site JOBS=16 native/build-cuda.sh .carry/lcp-trim.tar.gz \
    2>&1 | tail -25 && touch $W/built
fi
cp $W/build/llama-bench $OUT/ 2>/dev/null; true
