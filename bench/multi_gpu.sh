#!/usr/bin/env bash
# bench/multi_gpu.sh BUNDLE_DIR [SCHEDULE...]: on a machine with several GPUs, run examples/gpu-dualpipe.toml
# for each schedule (default: 1f1b dualpipe dualpipev) twice: in one process (every virtual rank on GPU 0)
# and with one process per rank (`--procs 8`, rank r on GPU r mod the GPUs present), then print, per
# schedule: the losses of both runs and their largest relative difference, the step's makespan and wall
# time, the measured bubble against the component-level simulator's prediction, and the share of
# all-to-all time hidden under compute in the F&B pairs (bench/overlap.py).
#
#   bash bench/multi_gpu.sh gpu-bundle                 # every schedule
#   LOOM_STEPS=3 bash bench/multi_gpu.sh gpu-bundle dualpipe
#
#   LOOM_PP=2 LOOM_EP=1 bash bench/multi_gpu.sh gpu-bundle   # one process per GPU: NCCL between them
#
# The data plane between processes is NCCL when every rank has its own GPU, else GPU rows go through host
# memory over UCX (LOOM_DATA_PLANE=ucx|nccl forces one). Settings: LOOM_STEPS (default 4), LOOM_PP and
# LOOM_EP (default 4 and 2: eight processes). NVLink multicast stays off (NCCL_NVLS_ENABLE=0, ...).
set -uo pipefail
bundle=${1:?usage: bench/multi_gpu.sh BUNDLE_DIR [SCHEDULE...]}
shift
schedules=("$@")
[[ ${#schedules[@]} -gt 0 ]] || schedules=(1f1b dualpipe dualpipev)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${OUT:-$(mktemp -d)}
steps=${LOOM_STEPS:-4}
pp=${LOOM_PP:-4}
ep=${LOOM_EP:-2}
procs=$((pp * ep))
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export UCX_TLS=${UCX_TLS:-posix,sysv,self}
nvidia-smi -L
# NCCL needs a GPU per process; the transport is opt-in in loom itself (runtime/cluster/cluster_run.cpp).
gpus=$(nvidia-smi -L | grep -c '^GPU ' || true)
if [[ -z ${LOOM_DATA_PLANE:-} ]]; then
  if ((procs <= gpus)); then export LOOM_DATA_PLANE=nccl; else export LOOM_DATA_PLANE=ucx; fi
fi
echo "data plane between the $procs processes on $gpus GPUs: $LOOM_DATA_PLANE"
status=0
for s in "${schedules[@]}"; do
  echo "== $s"
  for mode in one procs; do
    dir=$(mktemp -d)
    extra=()
    [[ $mode == procs ]] && extra=(--procs "$procs")
    start=$SECONDS
    if ! timeout 240 "$bundle/loom" run "$root/examples/gpu-dualpipe.toml" --set "schedule.file=\"../schedules/$s.sched\"" \
        --set "steps=$steps" --set "parallel.pp=$pp" --set "parallel.ep=$ep" "${extra[@]}" -q --out "$dir" >"$out/$s-$mode.log" 2>&1; then
      echo "FAILED: $s ($mode), rc=$?; last lines:"; tail -5 "$out/$s-$mode.log"; status=1; continue
    fi
    echo "  $mode: $((SECONDS - start)) s"
    cp "$dir/report.json" "$out/$s-$mode.json"
    python3 "$here/overlap.py" "$dir/trace.json" >"$out/$s-$mode-overlap.txt" 2>&1 || true
    rm -rf "$dir"
  done
  python3 - "$out" "$s" <<'EOF'
import json, os, sys
out, s = sys.argv[1], sys.argv[2]
def load(mode):
    p = os.path.join(out, f"{s}-{mode}.json")
    return json.load(open(p)) if os.path.exists(p) else None
one, procs = load("one"), load("procs")
for name, r in (("one process", one), ("one process per rank", procs)):
    if not r:
        continue
    steps = r["steps"][1:] or r["steps"]
    mk = sorted(x["makespan_ms"] for x in steps)
    wall = sorted(x["wall_ms"] for x in steps)
    m, p = r["measured"], r["predicted"]
    print(f"  {name}: makespan {mk[len(mk)//2]:.1f} ms (median of steps 2..), wall {wall[len(wall)//2]:.0f} ms;"
          f" bubble ratio measured {m['bubble_ratio']:.3f}, predicted {p['bubble_ratio']:.3f};"
          f" makespan predicted {p['makespan']:.1f} ms from measured op times")
    print("    loss " + " ".join(f"{x:.6f}" for x in r["loss"]))
if one and procs:
    d = max(abs(a - b) / abs(b) for a, b in zip(procs["loss"], one["loss"]))
    print(f"  largest relative loss difference, per-rank processes vs one process: {d:.2e}")
for mode in ("one", "procs"):
    p = os.path.join(out, f"{s}-{mode}-overlap.txt")
    if os.path.exists(p):
        lines = [l.split("(")[0].strip() for l in open(p) if l.strip()]
        print(f"  overlap ({mode}): " + "; ".join(lines))
EOF
done
exit $status
