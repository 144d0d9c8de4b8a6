#!/usr/bin/env bash
# The `ucx` transport beside ucx_perftest, same machine, same UCX_TLS, same sizes, one run:
#   latency    8-byte ping-pong, half the round trip (tag_lat): loom's from a send() call to the
#              peer's receive callback and back; "via-thread" adds the hand-off from the callback to
#              a waiting thread on both sides, as a consumer on another thread sees it
#   bandwidth  1, 4, 16 and 64 MiB one way (tag_bw)
# Usage: bench/transport.sh [BIN_DIR] [TLS...]   (default: build/bin, then "tcp posix")
# BIN_DIR holds transport_bench (and ucx_perftest, if it is not on PATH: a GPU bundle carries it).
# Prints one table; ratio = loom / ucx_perftest (bandwidth: higher is better; latency: lower is).
set -euo pipefail
bin=${1:-build/bin}
shift || true
tls_list=("$@")
[[ ${#tls_list[@]} -gt 0 ]] || tls_list=(tcp posix)
perftest=$(command -v ucx_perftest || true)
[[ -n $perftest ]] || perftest=$bin/ucx_perftest
[[ -x $perftest ]] || { echo "transport.sh: ucx_perftest not found (apt-get install ucx-utils)" >&2; exit 1; }
[[ -x $bin/transport_bench ]] || { echo "transport.sh: $bin/transport_bench not found (build it first)" >&2; exit 1; }

port=$((20000 + RANDOM % 20000))
mib=$((1 << 20))
sizes=(8 $mib $((4 * mib)) $((16 * mib)) $((64 * mib)))

# ucx_perftest: a server and a client on this host; prints the client's "Final:" line.
perftest_final() {  # TLS TEST SIZE ITERS
  local tls=$1 test=$2 size=$3 iters=$4 warm=$(( $4 / 10 + 1 ))
  port=$((port + 1))
  UCX_TLS=$tls,self "$perftest" -p $port >/dev/null 2>&1 &
  local server=$!
  sleep 0.3
  UCX_TLS=$tls,self "$perftest" 127.0.0.1 -p $port -t "$test" -s "$size" -n "$iters" -w "$warm" 2>/dev/null | awk '/Final:/'
  wait $server || true
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "nan" }'; }

printf '%-6s %-10s %-10s %14s %14s %7s\n' tls test size ucx_perftest loom ratio
for tls in "${tls_list[@]}"; do
  # loom: every size in one run of two processes.
  loom_out=$(UCX_TLS=$tls,self "$bin/transport_bench" --sizes "$(IFS=,; echo "${sizes[*]}")" --iterations 20000 \
             --bytes $((1 << 30)) --via-thread)
  for size in "${sizes[@]}"; do
    if (( size <= 8192 )); then
      ours=$(awk -v s="$size" '$1 == "latency" && $2 == s {print $3}' <<<"$loom_out")
      via=$(awk -v s="$size" '$1 == "latency_via_thread" && $2 == s {print $3}' <<<"$loom_out")
      # Final: iterations, latency typical/avg/overall (us), bandwidth avg/overall (MB/s), rate avg/overall.
      peer=$(perftest_final "$tls" tag_lat "$size" 20000 | awk '{print $4}')
      printf '%-6s %-10s %-10s %11.2f us %11.2f us %6.2fx\n' "$tls" latency "$size" "$peer" "$ours" "$(ratio "$ours" "$peer")"
      printf '%-6s %-10s %-10s %11.2f us %11.2f us %6.2fx\n' "$tls" via-thread "$size" "$peer" "$via" "$(ratio "$via" "$peer")"
    else
      ours=$(awk -v s="$size" '$1 == "bandwidth" && $2 == s {print $3}' <<<"$loom_out")
      iters=$(( (1 << 30) / size )); (( iters >= 16 )) || iters=16
      # ucx_perftest's MB is 2^20 bytes; transport_bench prints 10^6 bytes per second.
      peer=$(perftest_final "$tls" tag_bw "$size" "$iters" | awk '{printf "%.1f", $7 * 1048576 / 1e6}')
      printf '%-6s %-10s %-10s %9.0f MB/s %9.0f MB/s %6.2fx\n' "$tls" bandwidth "$((size / mib))MiB" "$peer" "$ours" "$(ratio "$ours" "$peer")"
    fi
  done
done
