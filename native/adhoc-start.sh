#!/usr/bin/env bash
# `lcdoc ask --mode rag` over one small named file, as installed, each run a new process and a
# fresh index folder (so the file is embedded every time): the default against PyTorch
# (LCDOC_EMBED_RUNTIME=torch), alternating. Prints wall and the answer's own retrieve_s.
set -uo pipefail
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf 'Site notes for the river survey.\n\nThe access code for the north gate is PELICAN.\n' > "$work/gate.txt"
for r in 1 2 3; do
  for cfg in default torch; do
    env_extra=""; [ $cfg = torch ] && env_extra="LCDOC_EMBED_RUNTIME=torch"
    t0=$(date +%s.%N)
    env $env_extra LCDOC_INDEX_DIR=$work/idx-$cfg-$r LCDOC_SOCKET=$work/none.sock \
      lcdoc ask "What is the access code for the north gate?" "$work/gate.txt" --mode rag --json \
      --no-server > "$work/out.json" 2>/dev/null
    rc=$?
    python3 - "$work/out.json" "$cfg" "$r" "$rc" "$t0" <<'PY'
import json, sys, time
path, cfg, r, rc, t0 = sys.argv[1:]
d = json.load(open(path)) if rc == "0" else {}
print(f"| {r} | {cfg} | {rc} | {time.time() - float(t0):.2f} | "
      f"{d.get('timings', {}).get('retrieve_s', float('nan')):.3f} | {d.get('plan', {}).get('device')} |")
PY
  done
done
