#!/usr/bin/env bash
# The `ucx` transport beside ucx_perftest, same machine, same UCX_TLS, same sizes, one run:
#   latency    8-byte ping-pong, half the round trip (tag_lat): loom's from a send() call to the
#              peer's receive callback and back; "via-thread" adds the hand-off from the callback to
#              a waiting thread on both sides, as a consumer on another thread sees it
#   bandwidth  1, 4, 16 and 64 MiB one way (tag_bw)
# Usage: bench/transport.sh [BIN_DIR] [TLS...]   (default: build/bin, then "tcp posix")
# BIN_DIR holds transport_bench (and ucx_perftest, if it is not on PATH: a GPU bundle carries it).
# Prints one table; ratio = loom / ucx_perftest (bandwidth: higher is better; latency: lower is).
# REPEAT=n (below) runs it all n times and prints medians and the ratio's spread.
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

# ucx_perftest: a server and a client on this host; prints the client's "Final:" line. On a loaded
# machine the server may not listen yet when the client starts: then it tries again, on a new port.
perftest_final() {  # TLS TEST SIZE ITERS
  local tls=$1 test=$2 size=$3 iters=$4 warm=$(( $4 / 10 + 1 )) try final server
  for try in 1 2 3; do
    port=$((port + 1))
    UCX_TLS=$tls,self "$perftest" -p $port >/dev/null 2>&1 &
    server=$!
    sleep $((try - 1)).3
    final=$(UCX_TLS=$tls,self "$perftest" 127.0.0.1 -p $port -t "$test" -s "$size" -n "$iters" -w "$warm" 2>/dev/null |
            awk '/Final:/' || true)
    if [[ -z $final ]]; then kill $server 2>/dev/null || true; fi
    wait $server 2>/dev/null || true
    if [[ -n $final ]]; then echo "$final"; return; fi
  done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.4f", a / b; else print "nan" }'; }
# The median and the range of numbers on stdin ("nan" where a run gave none).
median() { tr ' ' '\n' | awk '$1 != "" && $1 != "nan"' | sort -g |
           awk '{v[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
span() { tr ' ' '\n' | awk '$1 != "" && $1 != "nan"' | sort -g |
         awk 'NR == 1 {lo = $1} {hi = $1} END { if (NR == 0) print "nan"; else printf "%.2f-%.2f", lo, hi }'; }

# REPEAT=n runs loom and then ucx_perftest n times over, alternating, and prints each figure's median;
# "ratio range" is the spread of loom / ucx_perftest over the rounds (each round's pair ran within a
# minute of each other). On a shared or loaded machine a single round says little.
repeat=${REPEAT:-1}
if (( repeat > 1 )); then
  printf '%-6s %-10s %-10s %14s %14s %7s %12s\n' tls test size ucx_perftest loom ratio "ratio range"
else
  printf '%-6s %-10s %-10s %14s %14s %7s\n' tls test size ucx_perftest loom ratio
fi
for tls in "${tls_list[@]}"; do
  declare -A ours=() peer=() ratios=()
  for ((round = 0; round < repeat; ++round)); do
    # loom: every size in one run of two processes.
    loom_out=$(UCX_TLS=$tls,self "$bin/transport_bench" --sizes "$(IFS=,; echo "${sizes[*]}")" --iterations 20000 \
               --bytes $((1 << 30)) --via-thread)
    for size in "${sizes[@]}"; do
      if (( size <= 8192 )); then
        lat=$(awk -v s="$size" '$1 == "latency" && $2 == s {print $3}' <<<"$loom_out")
        via=$(awk -v s="$size" '$1 == "latency_via_thread" && $2 == s {print $3}' <<<"$loom_out")
        # Final: iterations, latency typical/avg/overall (us), bandwidth avg/overall (MB/s), rate avg/overall.
        them=$(perftest_final "$tls" tag_lat "$size" 20000 | awk '{print $4}')
        ours[lat]+=" $lat"; ours[via]+=" $via"; peer[lat]+=" $them"
        ratios[lat]+=" $(ratio "$lat" "$them")"; ratios[via]+=" $(ratio "$via" "$them")"
      else
        bw=$(awk -v s="$size" '$1 == "bandwidth" && $2 == s {print $3}' <<<"$loom_out")
        iters=$(( (1 << 30) / size )); (( iters >= 16 )) || iters=16
        # ucx_perftest's MB is 2^20 bytes; transport_bench prints 10^6 bytes per second.
        them=$(perftest_final "$tls" tag_bw "$size" "$iters" | awk '{printf "%.1f", $7 * 1048576 / 1e6}')
        ours[$size]+=" $bw"; peer[$size]+=" $them"; ratios[$size]+=" $(ratio "$bw" "$them")"
      fi
    done
  done
  row() {  # KEY PEER_KEY FORMAT TEST SIZE_LABEL
    local o p r extra=""
    o=$(median <<<"${ours[$1]}"); p=$(median <<<"${peer[$2]}"); r=$(median <<<"${ratios[$1]}")
    (( repeat > 1 )) && extra=$(printf ' %12s' "$(span <<<"${ratios[$1]}")")
    printf "$3%s\n" "$tls" "$4" "$5" "$p" "$o" "$r" "$extra"
  }
  for size in "${sizes[@]}"; do
    if (( size <= 8192 )); then
      row lat lat '%-6s %-10s %-10s %11.2f us %11.2f us %6.2fx' latency "$size"
      row via lat '%-6s %-10s %-10s %11.2f us %11.2f us %6.2fx' via-thread "$size"
    else
      row "$size" "$size" '%-6s %-10s %-10s %9.0f MB/s %9.0f MB/s %6.2fx' bandwidth "$((size / mib))MiB"
    fi
  done
  unset ours peer ratios
done
