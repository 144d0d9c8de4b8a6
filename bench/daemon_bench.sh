#!/usr/bin/env bash
# The daemon's two figures of issue 6, on a fresh state folder:
#   1. 200 submissions of examples/cpu-small.toml queued at once (xargs -P 8 loom submit): the wall
#      time until the last one is accepted (goal: under 5 s);
#   2. 200 `loom status` calls, one after the other, while an experiment runs and 200 wait: the
#      latency of each whole command (process start to exit; goal: p99 under 20 ms), and for
#      comparison that of `loom --version` (the same binary's start and exit, no daemon).
# Times come from bash's $EPOCHREALTIME (microseconds).
#
#   bench/daemon_bench.sh [BUILD_DIR]        (default: build; needs BUILD_DIR/bin/loom and loomd)
#
# Environment: SUBMISSIONS (200), PARALLEL (8), STATUS_CALLS (200), LOOMD_ARGS (more loomd options,
# e.g. "--idle" to run the experiments under SCHED_IDLE).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
loom=$build/bin/loom
loomd=$build/bin/loomd
submissions=${SUBMISSIONS:-200}
parallel=${PARALLEL:-8}
status_calls=${STATUS_CALLS:-200}
read -r -a loomd_args <<<"${LOOMD_ARGS:-}"
[[ -x $loom && -x $loomd ]] || { echo "daemon_bench: build $loom and $loomd first" >&2; exit 2; }

state=$(mktemp -d /tmp/loom-daemon-bench.XXXXXX)
daemon_pid=""
cleanup() {
  if [[ -n $daemon_pid ]]; then kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$state"
}
trap cleanup EXIT
unset LOOM_DAEMON LOOM_TOKEN_FILE
export LOOM_STATE=$state/state

now_us() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }

"$loomd" --state "$LOOM_STATE" --port 0 "${loomd_args[@]}" >"$state/loomd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$state/loomd.log" 2>/dev/null && break; sleep 0.05; done
grep "listening on" "$state/loomd.log"

# One long experiment first: it runs during both measurements (the daemon runs one at a time).
long=$("$loom" submit examples/cpu-small.toml --set steps=100000 2>/dev/null)

echo "== $submissions submissions, $parallel at a time"
t0=$(now_us)
seq "$submissions" | xargs -P "$parallel" -I{} "$loom" submit examples/cpu-small.toml --set steps=1 \
  >"$state/ids" 2>"$state/submit.err" || true  # a refused submission is counted below, not fatal
t1=$(now_us)
accepted=$(grep -c '^[0-9][0-9]*$' "$state/ids" || true)
unique=$(sort -u "$state/ids" | grep -c '^[0-9][0-9]*$' || true)
awk -v a="$accepted" -v n="$submissions" -v u="$unique" -v us=$((t1 - t0)) \
  'BEGIN { printf "accepted %d of %d (%d distinct ids) in %.3f s (%.1f submissions/s)\n", a, n, u, us / 1e6, a / (us / 1e6) }'
if ((accepted < submissions)); then
  echo "daemon_bench: $((submissions - accepted)) submissions failed; the first errors:"
  grep -v "queued experiment" "$state/submit.err" | head -5
fi

echo "== $status_calls x loom status while experiment $long runs"
"$loom" status | head -3 || true  # head may close the pipe early
: >"$state/lat"
: >"$state/base"
for _ in $(seq "$status_calls"); do
  a=$(now_us)
  "$loom" status >/dev/null
  b=$(now_us)
  "$loom" --version >/dev/null
  c=$(now_us)
  echo $((b - a)) >>"$state/lat"
  echo $((c - b)) >>"$state/base"
done
"$loom" status "$long" --json | grep -q '"status": "running"' || echo "daemon_bench: warning: experiment $long is no longer running"
# Nearest-rank percentiles of the sorted latencies.
percentiles() {  # label file
  sort -n "$2" | awk -v label="$1" '{ v[NR] = $1 } END {
    split("50 90 99", q, " "); line = label ":"
    for (i = 1; i <= 3; i++) { k = int((NR * q[i] + 99) / 100); line = line sprintf(" p%s %.2f ms,", q[i], v[k] / 1000) }
    printf "%s max %.2f ms (%d calls)\n", line, v[NR] / 1000, NR }'
}
percentiles "loom status   " "$state/lat"
percentiles "loom --version" "$state/base"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
