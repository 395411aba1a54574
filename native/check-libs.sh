#!/usr/bin/env bash
# Fail unless every llama.cpp library in DIR links libstdc++.so.6 dynamically and exports none of
# libstdc++'s own code. A library that carries a private copy (a toolchain that links libstdc++
# statically) crashes in llama_model_load once numpy or torch has loaded the system libstdc++.
#
#   native/check-libs.sh DIR
set -euo pipefail
dir=${1:?usage: check-libs.sh DIR}
bad=0
for lib in "$dir"/libllama.so "$dir"/libggml.so "$dir"/libggml-base.so "$dir"/libggml-cpu.so "$dir"/libggml-cuda.so; do
  [ -e "$lib" ] || continue
  if ! readelf -d "$lib" | grep -q 'NEEDED.*\[libstdc++\.so\.6\]'; then
    echo "check-libs: $lib does not list libstdc++.so.6 as NEEDED (libstdc++ linked statically?)" >&2
    bad=1
  fi
  # std::ostream::_M_insert<long>, the function the crash was traced to: libstdc++'s, not ours.
  if nm -D --defined-only "$lib" 2>/dev/null | grep -q ' _ZNSo9_M_insertIlEERSoT_$'; then
    echo "check-libs: $lib defines and exports libstdc++'s std::ostream::_M_insert<long>" >&2
    bad=1
  fi
done
[ "$bad" = 0 ] && echo "check-libs: every llama.cpp library in $dir links the system libstdc++ dynamically" >&2
exit $bad
