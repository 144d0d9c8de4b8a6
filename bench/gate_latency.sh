#!/usr/bin/env bash
# What the daemon's gate (runtime/daemon/gate.hpp) costs a client: one idle loomd, and N `loom status`
# calls alternated between the gate's port (STATE/endpoint) and the middleman's own loopback port
# behind it (found with ss), each whole command timed with bash's $EPOCHREALTIME.
#
#   bench/gate_latency.sh [BUILD_DIR] [N]     (default: build 300; needs BUILD_DIR/bin/loom and loomd)
set -euo pipefail
build=${1:-build}
n=${2:-300}
loom=$build/bin/loom
loomd=$build/bin/loomd
[[ -x $loom && -x $loomd ]] || { echo "gate_latency: build $loom and $loomd first" >&2; exit 2; }
command -v ss >/dev/null || { echo "gate_latency: needs ss (iproute2)" >&2; exit 2; }

state=$(mktemp -d /tmp/loom-gate-bench.XXXXXX)
"$loomd" --state "$state/state" --port 0 >"$state/loomd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 200); do [[ -s $state/state/endpoint ]] && break; sleep 0.05; done
gate=$(cat "$state/state/endpoint")
middleman=$(ss -ltnpH | grep "pid=$pid," | awk '{print $4}' | grep -vx "$gate" | head -1)
[[ -n $middleman ]] || { echo "gate_latency: cannot find the middleman's port" >&2; exit 1; }
echo "gate $gate, middleman $middleman, $n calls each"

time_one() {  # ADDRESS -> milliseconds
  local s e
  s=$EPOCHREALTIME
  "$loom" status --daemon "$1" --token-file "$state/state/token" >/dev/null
  e=$EPOCHREALTIME
  echo "$s $e" | awk '{printf "%.3f\n", ($2 - $1) * 1000}'
}
for _ in $(seq "$n"); do
  time_one "$gate" >>"$state/gate.txt"
  time_one "$middleman" >>"$state/direct.txt"
done
for f in gate direct; do
  sort -n "$state/$f.txt" | awk -v what="$f" '{a[NR] = $1} END {
    printf "%-7s p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", what, a[int(NR * 0.5)], a[int(NR * 0.9)], a[int(NR * 0.99)] }'
done
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
