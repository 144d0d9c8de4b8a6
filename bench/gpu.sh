#!/usr/bin/env bash
# bench/gpu.sh BUNDLE_DIR: on a GPU machine, run the GPU kernel tests and the GPU runtime tests (whole runs
# on the cuda backend against the cpu one), then the kernel benchmarks from the bundle (gpu_kernels_bench)
# and the PyTorch peer (bench/torch_peer.py), then one MoE layer forward + backward (moe_layer_bench) and
# its PyTorch peer (torch_peer.py moe: eager and torch.compile), then DualPipe on one GPU
# (examples/gpu-dualpipe.toml: the overlap of its F&B pairs), all on the same GPU, and print a short table
# last. BUNDLE_DIR is what ../shared/tools/gpu-bundle made (binaries +
# lib/). Logs go to $OUT when set. A binary missing from the bundle is reported and its part skipped; the
# exit status is non-zero when a test failed or a run failed, timed out or was skipped.
#
#   bash bench/gpu.sh gpu-bundle
#   LOOM_GPU_PARTS="layer" bash bench/gpu.sh gpu-bundle   # only some of: tests runtime kernels layer overlap
#   LOOM_GPU_KERNEL_TRACE=1 ...   # the overlap part also runs once under bench/kernel_trace.cpp (slower)
set -uo pipefail
bundle=${1:?usage: bench/gpu.sh BUNDLE_DIR}
bundle=$(cd "$bundle" && pwd) || { echo "gpu.sh: no bundle folder $1" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$(mktemp -d)}
mkdir -p "$logs"
work=$(mktemp -d)  # per-suite test logs; $logs gets them concatenated
parts=" ${LOOM_GPU_PARTS:-tests runtime kernels layer overlap} "
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
failed=""    # test suites that failed
problems=""  # runs that failed, timed out or had no binary

# have NAME: true when the bundle holds an executable NAME; otherwise say so and note it.
have() {
  [ -x "$bundle/$1" ] && return 0
  echo "MISSING: $bundle/$1 is not in the bundle (build it, bundle it); skipping what needs it"
  problems="$problems $1(missing)"
  return 1
}
# note WHAT RC: record a run that failed or timed out.
note() {
  if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then
    echo "TIMEOUT: $1 ran past its time limit (rc=$2); what it printed before is kept"
    problems="$problems $1(timeout)"
  elif [ "$2" -ne 0 ]; then
    echo "FAILED: $1 exited with rc=$2"
    problems="$problems $1(rc=$2)"
  fi
}
for f in bench.txt torch.txt layer.txt torch_moe.txt gpu.txt overlap.txt; do : >"$logs/$f"; done
echo '{}' >"$logs/dualpipe_report.json"

# cuBLAS: the system's, or else PyTorch's wheel copy.
probe=""
for b in gpu_kernels_bench moe_layer_bench gpu_kernel_tests; do
  if [ -x "$bundle/$b" ]; then probe="$bundle/$b"; break; fi
done
if [ -n "$probe" ] && ldd "$probe" | grep -q "not found"; then
  extra=$(python3 - <<'EOF'
import glob, os
try:
    import nvidia
    roots = [os.path.dirname(p) for p in nvidia.__path__]
except Exception:
    roots = []
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "libcublas*.so*"), recursive=True)})
print(":".join(dirs))
EOF
)
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$extra"
  echo "cuBLAS from PyTorch's wheels: $extra"
fi
[ -n "$probe" ] && ldd "$probe" | grep "not found" && echo "WARNING: libraries missing"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader \
  | tee "$logs/gpu.txt"

if [[ "$parts" == *" tests "* ]] && have gpu_kernel_tests; then
  echo "== GPU kernel tests"
  start=$SECONDS
  suites="gpu_rmsnorm gpu_attention gpu_router gpu_permute gpu_grouped_gemm gpu_gemm gpu_swiglu gpu_loss gpu_adamw gpu_memory"
  for s in $suites; do
    timeout 90 "$bundle/gpu_kernel_tests" --run_test="$s" --log_level=message --report_level=short --color_output=no \
      >"$work/test_$s.txt" 2>&1
    rc=$?
    grep -E "rel err|error|fail|skipped|seed" "$work/test_$s.txt" | grep -vE "rel err [0-9.e-]+$" | head -20
    tail -2 "$work/test_$s.txt" | sed "s/^/  [$s] /"
    [ $rc -eq 0 ] || failed="$failed $s(rc=$rc)"
    # A hung or crashed wgmma kernel: keep the benchmark away from it.
    if [ "$s" = gpu_grouped_gemm ] && [ $rc -ge 124 ]; then export LOOM_BENCH_SKIP_WGMMA=1; fi
  done
  cat "$work"/test_gpu_*.txt > "$logs/tests.log" 2>/dev/null
  python3 - "$work"/test_gpu_*.txt <<'EOF'
import re, sys
errs = []
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        m = re.search(r"(.*): rel err ([0-9.eE+-]+|inf|nan)\s*$", line)
        if m:
            errs.append((float(m.group(2)), m.group(1).strip()))
errs.sort(reverse=True)
print(f"{len(errs)} checks; largest relative errors:")
for e, what in errs[:6]:
    print(f"  {e:.2e}  {what}")
EOF
  echo "tests failed:${failed:- none} ($((SECONDS - start)) s)"
fi

if [[ "$parts" == *" runtime "* ]] && have gpu_runtime_tests; then
  echo "== GPU runtime tests (cuda backend against cpu)"
  start=$SECONDS
  timeout 300 "$bundle/gpu_runtime_tests" --log_level=test_suite --report_level=short --color_output=no \
    >"$logs/runtime_tests.log" 2>&1
  rc=$?
  grep -E "error|fail|Leaving test case" "$logs/runtime_tests.log" | head -20
  tail -2 "$logs/runtime_tests.log" | sed "s/^/  [gpu_runtime_tests] /"
  [ $rc -eq 0 ] || failed="$failed gpu_runtime_tests(rc=$rc)"
  echo "(runtime tests: $((SECONDS - start)) s)"
fi

if [[ "$parts" == *" kernels "* ]]; then
  start=$SECONDS
  echo "== loom kernels"
  if have gpu_kernels_bench; then
    timeout 200 "$bundle/gpu_kernels_bench" | tee "$logs/bench.txt"
    note gpu_kernels_bench "${PIPESTATUS[0]}"
  fi
  echo "== PyTorch peer ($((SECONDS - start)) s so far)"
  PYTHONUNBUFFERED=1 timeout 200 python3 "$here/torch_peer.py" kernels | tee "$logs/torch.txt"
  note "torch_peer.py kernels" "${PIPESTATUS[0]}"
  echo "(kernels: $((SECONDS - start)) s)"
fi

if [[ "$parts" == *" layer "* ]]; then
  start=$SECONDS
  echo "== loom MoE layer (moe_layer_bench)"
  if have moe_layer_bench; then
    timeout 240 "$bundle/moe_layer_bench" | tee "$logs/layer.txt"
    note moe_layer_bench "${PIPESTATUS[0]}"
  fi
  echo "== PyTorch MoE layer (torch_peer.py moe; $((SECONDS - start)) s so far)"
  PYTHONUNBUFFERED=1 timeout 360 python3 "$here/torch_peer.py" moe | tee "$logs/torch_moe.txt"
  note "torch_peer.py moe" "${PIPESTATUS[0]}"
  echo "(layer: $((SECONDS - start)) s)"
fi

if [[ "$parts" == *" overlap "* ]] && have loom && have loom-engine; then
  start=$SECONDS
  echo "== DualPipe on one GPU (examples/gpu-dualpipe.toml, 2 steps): overlap of the F&B pairs"
  timeout 240 "$bundle/loom" run "$here/../examples/gpu-dualpipe.toml" --set steps=2 --out "$work/dualpipe" \
    >"$logs/dualpipe.txt" 2>&1
  note "loom run gpu-dualpipe" $?
  tail -3 "$logs/dualpipe.txt"
  if [ -f "$work/dualpipe/report.json" ]; then
    cp "$work/dualpipe/report.json" "$logs/dualpipe_report.json"
    python3 "$here/overlap.py" "$work/dualpipe/trace.json" | tee "$logs/overlap.txt"
  fi
  if [ "${LOOM_GPU_KERNEL_TRACE:-0}" = 1 ]; then
    if [ -f "$bundle/lib/libloom_kernel_trace.so" ]; then
      echo "== the same run under the kernel tracer"
      CUDA_INJECTION64_PATH="$bundle/lib/libloom_kernel_trace.so" LOOM_KERNEL_TRACE="$work/kernels.%p.csv" \
        timeout 300 "$bundle/loom" run "$here/../examples/gpu-dualpipe.toml" --set steps=2 --out "$work/dualpipe-traced" \
        >"$logs/dualpipe_traced.txt" 2>&1
      note "loom run gpu-dualpipe (traced)" $?
      python3 "$here/kernel_trace.py" "$work"/kernels.*.csv | tee "$logs/kernels.txt"
    else
      echo "MISSING: $bundle/lib/libloom_kernel_trace.so (bundle build/lib/libloom_kernel_trace.so and libcupti)"
      problems="$problems kernel_trace(missing)"
    fi
  fi
  echo "(overlap: $((SECONDS - start)) s)"
fi

python3 - "$logs/bench.txt" "$logs/torch.txt" "$logs/gpu.txt" "$logs/layer.txt" "$logs/torch_moe.txt" \
  "$logs/dualpipe_report.json" "$logs/overlap.txt" <<'EOF'
import json
import sys
def read(path, tag=None):
    """'TAG name value' lines (or, without a tag, 'name value ...' lines) as {name: value}."""
    d = {}
    try:
        for line in open(path, errors="replace"):
            p = line.split()
            if tag is not None:
                if len(p) != 3 or p[0] != tag:
                    continue
                p = p[1:]
            if len(p) >= 2:
                try:
                    d[p[0]] = float(p[1])
                except ValueError:
                    pass
    except OSError:
        pass
    return d
b, t, lay = read(sys.argv[1], "bench"), read(sys.argv[2], "torch"), read(sys.argv[4], "layer")
t.update(read(sys.argv[5], "torch"))
try:
    gpu = open(sys.argv[3]).read().strip() or "n/a"
except OSError:
    gpu = "n/a"
def f(d, k, fmt="{:.1f}"):
    return fmt.format(d[k]) if k in d else "n/a"
def ratio(x, y):
    return f"{x / y:.2f}" if x and y else "n/a"
print()
print(f"GPU: {gpu}")
print("| measure | loom | reference | loom / reference | target |")
print("| --- | --- | --- | --- | --- |")
for name, label in (("gg_v3", "8 experts, 32768 rows, n=4096, k=7168"), ("gg_small", "32 experts, 16384 rows, n=2816, k=2048")):
    w, d = b.get(f"{name}_wgmma_tflops"), b.get(f"{name}_dense_tflops")
    print(f"| grouped GEMM x W, {label} (TFLOP/s) | {f(b, name + '_wgmma_tflops')} | cuBLAS dense {f(b, name + '_dense_tflops')} | {ratio(w, d)} | >= 0.70 |")
    print(f"| ... our mma.sync kernel (TFLOP/s) | {f(b, name + '_mma_sync_tflops')} | cuBLAS grouped {f(b, name + '_cublas_grouped_tflops')}, torch._grouped_mm {f(t, name + '_grouped_mm_tflops')} | | |")
    print(f"| ... dy W^T / weight grad, wgmma (TFLOP/s) | {f(b, name + '_wgmma_nk_tflops')} / {f(b, name + '_wgrad_tflops')} | | | |")
for name, label in (("attn128", "4x4096x16x128"), ("attn64", "4x4096x32x64")):
    lo, to = b.get(f"{name}_fwdbwd_ms"), t.get(f"{name}_fwdbwd_ms")
    print(f"| attention fwd+bwd {label}, default kernels (ms) | {f(b, name + '_fwdbwd_ms', '{:.3f}')} | SDPA {f(t, name + '_fwdbwd_ms', '{:.3f}')} | speed {ratio(to, lo)} | >= 0.8 |")
    print(f"| ... forward (ms, TFLOP/s) | {f(b, name + '_fwd_ms', '{:.3f}')}, {f(b, name + '_fwd_tflops')} | {f(t, name + '_fwd_ms', '{:.3f}')}, {f(t, name + '_fwd_tflops')} | speed {ratio(t.get(name + '_fwd_ms'), b.get(name + '_fwd_ms'))} | |")
    print(f"| ... backward (ms) | {f(b, name + '_bwd_ms', '{:.3f}')} | {f(t, name + '_bwd_ms', '{:.3f}')} | speed {ratio(t.get(name + '_bwd_ms'), b.get(name + '_bwd_ms'))} | |")
for name, label, ref in ((f"attn{d}_{v}", f"{s}, {w}", f"attn{d}") for d, s in ((128, "4x4096x16x128"), (64, "4x4096x32x64"))
                         for v, w in (("wgmma", "wgmma"), ("basic", "wgmma basic"), ("split", "wgmma, split backward"),
                                   ("mma", "mma.sync"))):
    print(f"| attention fwd+bwd {label} (ms: fwd / bwd / both) | {f(b, name + '_fwd_ms', '{:.3f}')} / {f(b, name + '_bwd_ms', '{:.3f}')} / {f(b, name + '_fwdbwd_ms', '{:.3f}')} | SDPA {f(t, ref + '_fwdbwd_ms', '{:.3f}')} | speed {ratio(t.get(ref + '_fwdbwd_ms'), b.get(name + '_fwdbwd_ms'))} | |")
print(f"| dense bf16 GEMM 8192^3 (TFLOP/s) | cublasLt {f(b, 'dense_8192_tflops')} | torch.matmul {f(t, 'dense_8192_tflops')} | | |")
# One MoE layer forward + backward: bench/moe_layer_bench.cpp against torch_peer.py moe ("speed" = torch / loom).
if all(k in lay for k in ("seqs", "seq_len", "hidden", "experts", "top_k")):
    shape = (f"{lay['seqs']:.0f} x {lay['seq_len']:.0f} tokens, hidden {lay['hidden']:.0f}, "
             f"{lay['experts']:.0f} experts top-{lay['top_k']:.0f}")
else:
    shape = "shape n/a"
lo, te, tc = lay.get("fwd_bwd_ms"), t.get("moe_layer_eager_ms"), t.get("moe_layer_compile_ms")
met = "n/a" if not (lo and tc) else ("met" if tc / lo >= 3.0 else "missed")
print(f"| MoE layer fwd+bwd, {shape}, 1 GPU (ms) | {f(lay, 'fwd_bwd_ms', '{:.3f}')} | torch eager {f(t, 'moe_layer_eager_ms', '{:.3f}')} | speed {ratio(te, lo)} | |")
print(f"| ... against torch.compile (ms) | {f(lay, 'fwd_bwd_ms', '{:.3f}')} | torch.compile {f(t, 'moe_layer_compile_ms', '{:.3f}')} | speed {ratio(tc, lo)} | >= 3.0: {met} |")
print(f"| ... useful TFLOP/s (fraction of the dense GEMM rate) | {f(lay, 'tflops')} ({f(lay, 'fraction_of_dense', '{:.2f}')} of {f(lay, 'dense_8192_tflops')}) | eager {f(t, 'moe_layer_eager_tflops')}, compile {f(t, 'moe_layer_compile_tflops')} | | |")
if "tokens" in lay and "moe_layer_tokens" in t and lay["tokens"] != t["moe_layer_tokens"]:
    print(f"WARNING: the layer rows compare different shapes ({lay['tokens']:.0f} against {t['moe_layer_tokens']:.0f} tokens)")
if t.get("moe_layer_grouped_mm") == 0:
    print("NOTE: the PyTorch layer ran its experts as a loop (torch._grouped_mm unusable here: see its log)")
if any(k.startswith("comp_") for k in lay):
    def c(k):
        return f(lay, "comp_" + k + "_ms", "{:.3f}")
    print()
    print("| loom layer component, each alone (ms) | forward | backward, inputs | backward, weights |")
    print("| --- | --- | --- | --- |")
    print(f"| attention (norms, qkv, attention, out proj, router) | {c('attention_fwd')} | {c('attention_bwd_input')} | {c('attention_bwd_weight')} |")
    print(f"| dispatch (route plan, permute; send + receive) | {c('dispatch_fwd')} | {c('dispatch_bwd')} | |")
    print(f"| mlp (experts, shared expert) | {c('mlp_fwd')} | {c('mlp_bwd_input')} | {c('mlp_bwd_weight')} |")
    print(f"| combine (weighted sum; send + receive) | {c('combine_fwd')} | {c('combine_bwd')} | |")
    print(f"| sum of the components / the whole run | {f(lay, 'comp_sum_ms', '{:.3f}')} / {f(lay, 'fwd_bwd_ms', '{:.3f}')} | | |")
# DualPipe on one GPU: report.json's measured.comm (last step) and bench/overlap.py on the trace.
try:
    report = json.load(open(sys.argv[6]))
except (OSError, ValueError):
    report = {}
comm = report.get("measured", {}).get("comm", {})
ov = read(sys.argv[7])  # bench/overlap.py: "name value  (what)"
if comm or ov:
    hidden = comm.get("pair_hidden_fraction")
    print()
    print("| DualPipe on one GPU, examples/gpu-dualpipe.toml, last step | loom | reference | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    met = "n/a" if hidden is None else ("met" if hidden >= 0.8 else "missed")
    print(f"| comm hidden under the same rank's compute, F&B pairs ({comm.get('pairs', 'n/a')} pairs) | "
          f"{f(comm, 'pair_hidden_fraction', '{:.3f}')} | | | >= 0.80: {met} |")
    print(f"| ... comm busy / wait inside the pairs (ms, all virtual ranks) | {f(comm, 'pair_busy')} / {f(comm, 'pair_wait')} | | | |")
    po = ov.get("pair_over_f_plus_b")
    print(f"| median F&B pair against median F + median B (ms, both steps) | {f(ov, 'pair_ms', '{:.2f}')} | {f(ov, 'f_plus_b_ms', '{:.2f}')} | "
          f"{f(ov, 'pair_over_f_plus_b', '{:.3f}')} | < 1: {'n/a' if po is None else ('met' if po < 1 else 'missed')} |")
    ms, pred = report.get("measured", {}).get("makespan"), report.get("predicted", {}).get("makespan")
    print(f"| makespan (ms), measured against the simulator | {'n/a' if ms is None else f'{ms:.1f}'} | "
          f"{'n/a' if pred is None else f'{pred:.1f}'} | {ratio(ms, pred)} | |")
EOF
echo "tests failed:${failed:- none}; runs failed, timed out or skipped:${problems:- none}"
[ -z "$failed" ] && [ -z "$problems" ]
