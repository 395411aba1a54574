#!/usr/bin/env bash
# GPU smoke test: the installed `lcdoc` console script answers a real question on the GPU with
# numpy, torch (the embedder) and llama.cpp loaded in one process, in both orders:
#   1. ask, stuffed:        numpy, then the model                     (crashed: exit 139)
#   2. ask --mode rag:      the model, then torch for the embedder    (aborted: exit 134)
#   3. serve + ask:         torch first (the server loads the embedder first), then the model
# Steps 2 and 3 set LCDOC_EMBED_RUNTIME=torch: by default a small file is embedded by the ONNX
# export and torch would not be loaded at all.
# Each must exit 0, plan the GPU, and answer; with the packaged SmolLM2 (or SMOKE_EXPECT set) the
# answer must contain the planted code.
#
#   native/smoke-gpu.sh            model: LCDOC_MODEL, else the packaged SmolLM2
set -euo pipefail
command -v lcdoc >/dev/null || { echo "smoke-gpu: the lcdoc console script is not installed" >&2; exit 1; }
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export LCDOC_INDEX_DIR=$work/indexes LCDOC_SOCKET=$work/serve.sock
cat > "$work/gate.txt" <<'DOC'
Site notes for the river survey, spring season.

The access code for the north gate is PELICAN. The south gate has no lock.
Water samples are taken at dawn from the three marked buoys, and the turbidity meter is
calibrated with the grey reference bottle before every survey.
DOC
expect=${SMOKE_EXPECT:-}
[ -z "${LCDOC_MODEL:-}" ] && expect=${expect:-PELICAN}
question="What is the access code for the north gate?"

check() {  # name, json file
  python3 - "$1" "$2" "$expect" <<'PY'
import json, sys
name, path, expect = sys.argv[1:]
d = json.load(open(path))
problems = []
if d["plan"]["device"] != "cuda":
    problems.append(f"planned for {d['plan']['device']}, not cuda")
if not d["answer"].strip():
    problems.append("empty answer")
if expect and expect.lower() not in d["answer"].lower():
    problems.append(f"answer lacks {expect!r}")
if name == "server" and not d.get("server"):
    problems.append("not answered by the server")
status = "FAIL" if problems else "ok"
print(f"smoke-gpu: {status} {name}: route {d['route']}, {d['plan']['n_gpu_layers']} GPU layers, "
      f"prefill {d['timings']['prefill_s']:.2f} s; {d['answer'][:100]!r}"
      + (f" -- {'; '.join(problems)}" if problems else ""), file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

rc=0
lcdoc ask "$question" "$work/gate.txt" --json --no-server > "$work/stuff.json" || { echo "smoke-gpu: FAIL stuff: exit $?" >&2; exit 1; }
check stuff "$work/stuff.json" || rc=1
LCDOC_EMBED_RUNTIME=torch lcdoc ask "$question" "$work/gate.txt" --mode rag --json --no-server > "$work/rag.json" || { echo "smoke-gpu: FAIL rag: exit $?" >&2; exit 1; }
check rag "$work/rag.json" || rc=1

LCDOC_EMBED_RUNTIME=torch lcdoc serve 2> "$work/serve.log" &
server=$!
for _ in $(seq 300); do grep -q ready "$work/serve.log" 2>/dev/null && break; kill -0 $server 2>/dev/null || break; sleep 0.2; done
grep -q ready "$work/serve.log" || { echo "smoke-gpu: FAIL serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
lcdoc ask "$question" "$work/gate.txt" --json > "$work/server.json" || { echo "smoke-gpu: FAIL server ask: exit $?" >&2; exit 1; }
check server "$work/server.json" || rc=1
kill -TERM $server; wait $server || { echo "smoke-gpu: FAIL serve exited $? on SIGTERM" >&2; rc=1; }
server=
[ -e "$LCDOC_SOCKET" ] && { echo "smoke-gpu: FAIL the socket outlived the server" >&2; rc=1; }
[ $rc = 0 ] && echo "smoke-gpu: all passed" >&2
exit $rc
