#!/usr/bin/env python3
"""PyTorch peer of bench/gpu_kernels_bench: the same shapes through PyTorch on the same GPU.

Prints one "torch <key> <value>" line per number (bench/gpu.sh puts them in its table):
  * causal attention forward / forward+backward with torch.nn.functional.scaled_dot_product_attention
    (is_causal=True) on q, k, v viewed from one packed [tokens, 3 * hidden] bf16 buffer, like loom's layout;
    the kernel PyTorch picked is printed (from the profiler);
  * the bf16 dense GEMM rate, 8192^3 (torch.matmul);
  * torch._grouped_mm on the grouped-GEMM shape, where this PyTorch has it;
  * one MoE layer forward + backward, the peer of bench/moe_layer_bench.cpp (same shapes, bf16): RMSNorm ->
    fused qkv projection -> SDPA (causal) -> out projection + residual -> RMSNorm -> router (softmax, top-k)
    -> token copies sorted by expert -> per-expert SwiGLU (torch._grouped_mm, else a loop over experts)
    -> back to token order, weighted sum + shared expert + residual; eager and torch.compile (default
    mode). Lines "torch moe_layer_eager_ms X" and "torch moe_layer_compile_ms Y".
Timing: CUDA events, warm-up, median of many runs.

  python3 bench/torch_peer.py [dense|grouped|attention|kernels|moe [key=value ...]]
With no argument everything runs; "kernels" is dense + grouped + attention. moe takes the layer's shape and
timing as key=value (seqs, seq_len, hidden, heads, experts, top_k, ffn, shared_ffn, iters, warmup,
compile=0|1); the defaults are bench/moe_layer_bench's.
"""
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F


def median_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def out(key, value, text):
    print(f"torch {key} {value:.6g}")
    print(f"  {text:<58} {value:10.3f}", flush=True)


def attention(name, batch, seq, heads, hd):
    hidden = heads * hd
    qkv = torch.randn(batch, seq, 3, heads, hd, device="cuda", dtype=torch.bfloat16)
    dout = torch.randn(batch, heads, seq, hd, device="cuda", dtype=torch.bfloat16)
    leaf = qkv.detach().requires_grad_(True)

    def views(x):
        q, k, v = x.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, S, D], strided like loom's packed layout
        return q, k, v

    sdpa = torch.nn.functional.scaled_dot_product_attention

    def fwd():
        with torch.no_grad():
            q, k, v = views(qkv)
            sdpa(q, k, v, is_causal=True)

    def fwd_bwd():
        q, k, v = views(leaf)
        o = sdpa(q, k, v, is_causal=True)
        o.backward(dout)
        leaf.grad = None

    fwd_bwd()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fwd_bwd()
        torch.cuda.synchronize()
    kernels = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA},
                     key=len)[:6]
    print(f"  SDPA kernels ({name}): " + "; ".join(k[:80] for k in kernels))
    t_f = median_ms(fwd)
    t_fb = median_ms(fwd_bwd)
    flops = 4.0 * batch * heads * seq * seq * hd / 2
    shape = f"{batch}x{seq}x{heads}x{hd}"
    out(f"{name}_fwd_ms", t_f, f"SDPA forward {shape} (ms)")
    out(f"{name}_fwd_tflops", flops / (t_f * 1e-3) / 1e12, "  forward rate (TFLOP/s)")
    out(f"{name}_fwdbwd_ms", t_fb, "SDPA forward + backward (ms)")
    out(f"{name}_bwd_ms", t_fb - t_f, "  backward (difference, ms)")
    del qkv, dout, leaf
    torch.cuda.empty_cache()


def dense():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = median_ms(lambda: torch.matmul(a, b), 5, 30)
    out("dense_8192_tflops", 2 * n ** 3 / (t * 1e-3) / 1e12, "torch.matmul bf16 8192^3 (TFLOP/s)")


def grouped(name, groups, rows, n, k):
    if not hasattr(torch, "_grouped_mm"):
        print("  torch._grouped_mm: not in this PyTorch")
        return
    g = torch.Generator().manual_seed(7)
    w = (0.7 + 0.6 * torch.rand(groups, generator=g, dtype=torch.float64)) / torch.arange(1, groups + 1) ** 0.5
    counts = (w / w.sum() * rows).floor().long()
    counts[0] += rows - counts.sum()
    offs = torch.cumsum(counts, 0).to(torch.int32).cuda()
    a = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(groups, n, k, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # [G, k, n], column-major
    try:
        t = median_ms(lambda: torch._grouped_mm(a, b, offs=offs))
    except Exception as e:  # noqa: BLE001 - report and carry on
        print(f"  torch._grouped_mm failed: {e}")
        return
    out(f"{name}_grouped_mm_tflops", 2.0 * rows * n * k / (t * 1e-3) / 1e12,
        f"torch._grouped_mm ({groups} experts, {rows} rows) (TFLOP/s)")


MOE_DEFAULTS = dict(seqs=1, seq_len=4096, hidden=2048, heads=16, experts=64, top_k=6, ffn=1408, shared_ffn=2816,
                    iters=20, warmup=3, compile=1)


def moe_config(args):
    cfg = dict(MOE_DEFAULTS)
    for a in args:
        key, _, value = a.partition("=")
        if key not in cfg or not value.lstrip("-").isdigit():
            raise SystemExit(f"torch_peer.py: bad moe argument {a!r}; use key=integer with key in {sorted(cfg)}")
        cfg[key] = int(value)
    if cfg["hidden"] % cfg["heads"] or cfg["top_k"] > cfg["experts"] or min(cfg.values()) < 0:
        raise SystemExit(f"torch_peer.py: inconsistent moe shape {cfg}")
    return cfg


def moe_flops(c):
    """Useful FLOPs of forward + backward, counted as bench/moe_layer_bench.cpp counts them."""
    T, d, S, hd = c["seqs"] * c["seq_len"], c["hidden"], c["seq_len"], c["hidden"] // c["heads"]
    fwd = (2 * T * d * 3 * d + 2.0 * c["seqs"] * c["heads"] * S * S * hd + 2 * T * d * d + 2 * T * d * c["experts"]
           + 6 * T * d * c["shared_ffn"] + 6 * T * c["top_k"] * d * c["ffn"])
    return 3 * fwd


def grouped_mm_usable():
    """(True, "") when torch._grouped_mm runs forward and backward here and matches a loop over experts."""
    if not hasattr(torch, "_grouped_mm"):
        return False, "torch._grouped_mm is not in this PyTorch"
    try:
        g = torch.Generator(device="cuda").manual_seed(3)
        counts = [5, 0, 17, 10]  # uneven, one empty expert
        d, f = 64, 24
        a = torch.randn(sum(counts), d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
        w = (torch.randn(len(counts), 2 * f, d, device="cuda", dtype=torch.bfloat16, generator=g) * 0.1).requires_grad_(True)
        offs = torch.tensor(counts, device="cuda").cumsum(0).to(torch.int32)
        out = torch._grouped_mm(a, w.transpose(-2, -1), offs=offs)
        dout = torch.randn_like(out)
        out.backward(dout)
        ga, gw = a.grad.clone(), w.grad.clone()
        a.grad = w.grad = None
        ref, at = [], 0
        for e, n in enumerate(counts):
            ref.append(a[at:at + n] @ w[e].t())
            at += n
        ref = torch.cat(ref)
        ref.backward(dout)

        def rel(x, y):
            return ((x.float() - y.float()).norm() / y.float().norm().clamp_min(1e-12)).item()

        errs = (rel(out, ref), rel(ga, a.grad), rel(gw, w.grad))
        if max(errs) > 2e-2:
            return False, f"torch._grouped_mm differs from a loop over experts (rel err {errs})"
        return True, ""
    except Exception as e:  # noqa: BLE001 - report and fall back
        return False, f"torch._grouped_mm failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def make_moe_layer(c, grouped):
    """The layer as one function of (x, weights...) -> y, for eager use and for torch.compile."""
    seqs, S, d, H = c["seqs"], c["seq_len"], c["hidden"], c["heads"]
    hd, E, k, f, fs = d // H, c["experts"], c["top_k"], c["ffn"], c["shared_ffn"]
    T = seqs * S

    def experts(rows, flat_sorted, w13, w2):
        if grouped:
            # end offset of each expert's rows: no host sync, static shapes
            offs = torch.searchsorted(flat_sorted, torch.arange(E, device=rows.device), right=True).to(torch.int32)
            h13 = torch._grouped_mm(rows, w13.transpose(-2, -1), offs=offs)
            return torch._grouped_mm(F.silu(h13[:, :f]) * h13[:, f:], w2.transpose(-2, -1), offs=offs)
        counts = torch.bincount(flat_sorted, minlength=E).tolist()  # host sync
        outs, at = [], 0
        for e, n in enumerate(counts):
            if n:
                h13 = rows[at:at + n] @ w13[e].t()
                outs.append((F.silu(h13[:, :f]) * h13[:, f:]) @ w2[e].t())
            at += n
        return torch.cat(outs)

    def layer(x, norm1, wqkv, wo, norm2, router, sw13, sw2, w13, w2):
        ln1 = F.rms_norm(x, (d,), norm1, eps=1e-5)
        qkv = ln1 @ wqkv  # [T, 3d]
        q, kk, v = qkv.view(seqs, S, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [seqs, H, S, hd] each
        ctx = F.scaled_dot_product_attention(q, kk, v, is_causal=True).transpose(1, 2).reshape(T, d)
        h = x + ctx @ wo
        u = F.rms_norm(h, (d,), norm2, eps=1e-5)
        probs = (u @ router).float().softmax(-1)
        topw, topi = probs.topk(k, dim=-1)  # weight = p, as loom's softmax gating
        flat = topi.reshape(-1)
        order = flat.argsort(stable=True)  # token copies by expert, then token
        rows = u[order // k]  # dispatch
        expert_out = experts(rows, flat[order], w13, w2)
        inv = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        per_token = expert_out[inv].view(T, k, d)  # combine: each token's k copies in k order
        y = h + torch.bmm(topw.to(per_token.dtype).unsqueeze(1), per_token).squeeze(1)
        if fs > 0:
            s13 = u @ sw13
            y = y + (F.silu(s13[:, :fs]) * s13[:, fs:]) @ sw2
        return y

    return layer


def moe_layer(c):
    T, d, E, f, fs = c["seqs"] * c["seq_len"], c["hidden"], c["experts"], c["ffn"], c["shared_ffn"]
    print(f"  MoE layer: {c['seqs']} x {c['seq_len']} = {T} tokens, hidden {d}, {c['heads']} heads, {E} experts "
          f"top-{c['top_k']}, expert FFN {f}, shared FFN {fs}, softmax gating, bf16")
    out("moe_layer_tokens", T, "tokens in the microbatch")
    grouped, why = grouped_mm_usable()
    print("  experts: " + ("torch._grouped_mm (one grouped GEMM per projection)" if grouped
                           else f"a loop over experts ({why})"))
    out("moe_layer_grouped_mm", 1 if grouped else 0, "experts through torch._grouped_mm (1) or a loop (0)")
    g = torch.Generator(device="cuda").manual_seed(1)

    def w(*shape):
        return (torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02).requires_grad_(True)

    def ones(n):
        return torch.ones(n, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    weights = [ones(d), w(d, 3 * d), w(d, d), ones(d), w(d, E), w(d, 2 * max(fs, 1)), w(max(fs, 1), d),
               w(E, 2 * f, d), w(E, d, f)]  # [E, out, in] per expert, used transposed
    x = torch.randn(T, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
    dy = torch.randn(T, d, device="cuda", dtype=torch.bfloat16, generator=g)
    tensors = [x] + weights
    flops = moe_flops(c)

    def stepper(fn):
        def step():
            fn(x, *weights).backward(dy)
            for t in tensors:
                t.grad = None
        return step

    layer = make_moe_layer(c, grouped)
    t = median_ms(stepper(layer), c["warmup"], c["iters"])
    out("moe_layer_eager_ms", t, "MoE layer fwd+bwd, eager (ms)")
    out("moe_layer_eager_tflops", flops / (t * 1e-3) / 1e12, "  useful rate (TFLOP/s)")
    if not c["compile"]:
        print("  torch.compile: skipped (compile=0)")
        return
    try:
        compiled = torch.compile(make_moe_layer(c, grouped))
        step = stepper(compiled)
        t0 = time.time()
        step()
        torch.cuda.synchronize()
        print(f"  torch.compile (default mode): first forward + backward (compiling) took {time.time() - t0:.1f} s")
        t = median_ms(step, c["warmup"], c["iters"])
    except Exception as e:  # noqa: BLE001 - report and carry on
        lines = traceback.format_exception_only(type(e), e)
        print("  torch.compile failed, no compiled timing: " + " ".join(l.strip() for l in lines)[:600])
        return
    out("moe_layer_compile_ms", t, "MoE layer fwd+bwd, torch.compile (ms)")
    out("moe_layer_compile_tflops", flops / (t * 1e-3) / 1e12, "  useful rate (TFLOP/s)")


USAGE = "usage: torch_peer.py [dense|grouped|attention|kernels|moe [key=value ...]]"


def main():
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 1
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}")
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    if only not in ("", "dense", "grouped", "attention", "kernels", "moe") or (only != "moe" and len(sys.argv) > 2):
        print(USAGE)
        return 2
    kernels = only in ("", "kernels")
    if kernels or only == "dense":
        dense()
    if kernels or only == "grouped":
        grouped("gg_v3", 8, 32768, 4096, 7168)
        grouped("gg_small", 32, 16384, 2816, 2048)
    if kernels or only == "attention":
        attention("attn128", 4, 4096, 16, 128)
        attention("attn64", 4, 4096, 32, 64)
    if only in ("", "moe"):
        cfg = moe_config(sys.argv[2:])
        try:
            moe_layer(cfg)
        except Exception:  # noqa: BLE001 - say what failed, then fail
            print("torch moe_layer failed:")
            traceback.print_exc(file=sys.stdout)
            return 1
        finally:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
