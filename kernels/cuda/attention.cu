// Causal attention, forward and backward, on bf16 tensor cores: wgmma (sm_90a) and mma.sync kernels
// (see attention.hpp).
//
// Shared-memory tiles hold rows of head_dim bf16 (128 or 256 bytes) with the 16-byte chunks XOR-swizzled by
// the row's low bits (dev::swz), so every ldmatrix is free of bank conflicts. Fragment conventions
// (m16n8k16, lane = 4 g + t): A rows g / g + 8, k pairs 2t (+8); B k pairs 2t (+8), column g; C rows g / g +
// 8, columns 2t, 2t + 1. Probabilities go from C fragments straight into A fragments (two n8 tiles = one
// k16).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/tensor_map.cuh"

namespace loom::cuda {

namespace {

using namespace dev;

constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

struct fwd_args {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* out;
  float* lse;
  int ld_qkv, ld_out, seq_len, heads;
  float scale_log2;
};

// ---------------------------------------------------------------------------------------------
// forward: 4 warps x 32 query rows (two m16 tiles each), 64-key tiles
// ---------------------------------------------------------------------------------------------

constexpr int fwd_br = 128, fwd_bc = 64, fwd_warps = 4;

template <int D>
constexpr int fwd_smem_bytes() {
  return (fwd_br + 4 * fwd_bc) * D * 2;  // Q, K x 2, V x 2
}

template <int D>
__global__ void __launch_bounds__(fwd_warps * 32, 2) attention_forward_kernel(const fwd_args a) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  constexpr int DT = D / 8;  // n8 tiles across head_dim
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK0 = sQ + fwd_br * D * 2;
  const uint32_t sV0 = sK0 + 2 * fwd_bc * D * 2;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int L = a.seq_len;
  const int qb = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int h = blockIdx.y, s = blockIdx.z;
  const int q0 = qb * fwd_br;
  const std::size_t tok0 = static_cast<std::size_t>(s) * L;
  const bf16* Q = a.q + tok0 * a.ld_qkv + h * D;
  const bf16* K = a.k + tok0 * a.ld_qkv + h * D;
  const bf16* V = a.v + tok0 * a.ld_qkv + h * D;

  for (int i = tid; i < fwd_br * CH; i += fwd_warps * 32) {
    const int r = i / CH, c = i % CH;
    const bool ok = q0 + r < L;
    cp_async16(sQ + swz<CH>(r, c), ok ? Q + static_cast<std::size_t>(q0 + r) * a.ld_qkv + c * 8 : Q, ok);
  }
  auto load_kv = [&](int buf, int kb) {
    const int k0 = kb * fwd_bc;
    const uint32_t dk = sK0 + buf * fwd_bc * D * 2, dv = sV0 + buf * fwd_bc * D * 2;
    for (int i = tid; i < fwd_bc * CH; i += fwd_warps * 32) {
      const int r = i / CH, c = i % CH;
      const bool ok = k0 + r < L;
      const std::size_t off = static_cast<std::size_t>(k0 + r) * a.ld_qkv + c * 8;
      cp_async16(dk + swz<CH>(r, c), ok ? K + off : K, ok);
      cp_async16(dv + swz<CH>(r, c), ok ? V + off : V, ok);
    }
  };
  const int last_key = min(L, q0 + fwd_br) - 1;
  const int n_kb = last_key / fwd_bc + 1;
  load_kv(0, 0);
  cp_async_commit();

  float o[2][DT][4];
  float m[4], l[4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int j = 0; j < DT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][j][e] = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
  }
  const int row_base = q0 + warp * 32 + (lane >> 2);  // + 16 mi + 8 hi

  for (int kb = 0; kb < n_kb; ++kb) {
    if (kb + 1 < n_kb) load_kv((kb + 1) & 1, kb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const uint32_t sK = sK0 + (kb & 1) * fwd_bc * D * 2, sV = sV0 + (kb & 1) * fwd_bc * D * 2;
    const int k0 = kb * fwd_bc;

    float sc[2][8][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[mi][j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        ldmatrix_x4(sQ + swz<CH>(warp * 32 + mi * 16 + (lane & 15), kk * 2 + (lane >> 4)), qa[mi][0],
                    qa[mi][1], qa[mi][2], qa[mi][3]);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(sK + swz<CH>(np * 16 + (lane & 7) + 8 * (lane >> 4), kk * 2 + ((lane >> 3) & 1)), b0, b1,
                    b2, b3);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_bf16(sc[mi][2 * np], qa[mi], b0, b1);
          mma_bf16(sc[mi][2 * np + 1], qa[mi], b2, b3);
        }
      }
    }

    // Scale into log2 units, mask, online softmax.
    const bool diag = k0 + fwd_bc - 1 > q0 + warp * 32;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int row = row_base + mi * 16 + hi * 8;
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float x = sc[mi][j][2 * hi + e] * a.scale_log2;
            if (diag) {
              const int col = k0 + j * 8 + 2 * (lane & 3) + e;
              if (col > row) x = -INFINITY;
            }
            sc[mi][j][2 * hi + e] = x;
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const int ri = mi * 2 + hi;
        const float m_new = fmaxf(m[ri], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2f(m[ri] - m_use);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(sc[mi][j][2 * hi + e] - m_use);
            sc[mi][j][2 * hi + e] = p;
            sum += p;
          }
        }
        l[ri] = l[ri] * alpha + sum;
        m[ri] = m_new;
#pragma unroll
        for (int j = 0; j < DT; ++j) {
          o[mi][j][2 * hi] *= alpha;
          o[mi][j][2 * hi + 1] *= alpha;
        }
      }
    }

    // O += P V
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        pa[mi][0] = pack_bf16(sc[mi][2 * kk][0], sc[mi][2 * kk][1]);
        pa[mi][1] = pack_bf16(sc[mi][2 * kk][2], sc[mi][2 * kk][3]);
        pa[mi][2] = pack_bf16(sc[mi][2 * kk + 1][0], sc[mi][2 * kk + 1][1]);
        pa[mi][3] = pack_bf16(sc[mi][2 * kk + 1][2], sc[mi][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(sV + swz<CH>(kk * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), dp * 2 + (lane >> 4)),
                          b0, b1, b2, b3);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_bf16(o[mi][2 * dp], pa[mi], b0, b1);
          mma_bf16(o[mi][2 * dp + 1], pa[mi], b2, b3);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this K/V buffer
  }

  // Normalise and write out and the log-sum-exp.
  bf16* out = a.out + tok0 * a.ld_out + h * D;
  float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int ri = mi * 2 + hi;
      float sum = l[ri];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = row_base + mi * 16 + hi * 8;
      if (row < L) {
        const float inv = 1.f / sum;
#pragma unroll
        for (int j = 0; j < DT; ++j) {
          const int col = j * 8 + 2 * (lane & 3);
          *reinterpret_cast<uint32_t*>(out + static_cast<std::size_t>(row) * a.ld_out + col) =
              pack_bf16(o[mi][j][2 * hi] * inv, o[mi][j][2 * hi + 1] * inv);
        }
        if ((lane & 3) == 0) lse[row] = (m[ri] + log2f(sum)) * ln2;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------

struct bwd_args {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* dout;
  const float* lse;
  const float* delta;
  float* dq_acc;  // [tokens, heads * D]
  bf16* dk;
  bf16* dv;
  int ld_qkv, ld_dout, ld_dqkv, seq_len, heads;
  float scale, scale_log2;
};

// delta[(s * heads + h) * L + i] = dot(dout_i, out_i) for head h: one warp per (token, head).
template <int D>
__global__ void attention_delta_kernel(const bf16* __restrict__ out, int ld_out,
                                       const bf16* __restrict__ dout, int ld_dout, float* __restrict__ delta,
                                       int tokens, int seq_len, int heads) {
  const int lane = threadIdx.x & 31;
  const long long item = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (item >= static_cast<long long>(tokens) * heads) return;
  const int t = static_cast<int>(item / heads), h = static_cast<int>(item % heads);
  const bf16* o = out + static_cast<std::size_t>(t) * ld_out + h * D;
  const bf16* g = dout + static_cast<std::size_t>(t) * ld_dout + h * D;
  float acc = 0.f;
#pragma unroll
  for (int c = lane * 2; c < D; c += 64) {
    const float2 x = unpack_bf16(*reinterpret_cast<const uint32_t*>(o + c));
    const float2 y = unpack_bf16(*reinterpret_cast<const uint32_t*>(g + c));
    acc += x.x * y.x + x.y * y.y;
  }
  acc = warp_sum(acc);
  if (lane == 0) {
    const int s = t / seq_len, i = t % seq_len;
    delta[(static_cast<std::size_t>(s) * heads + h) * seq_len + i] = acc;
  }
}

constexpr int bwd_bc = 128, bwd_br = 64, bwd_warps = 8;

template <int D>
constexpr int bwd_smem_bytes() {
  return (2 * bwd_bc + 4 * bwd_br) * D * 2 + bwd_bc * bwd_br * 2 + 4 * bwd_br * 4;
}

template <int D>
__global__ void __launch_bounds__(bwd_warps * 32, 1) attention_backward_kernel(const bwd_args a) {
  constexpr int CH = D / 8;
  constexpr int DT = D / 8;
  constexpr int QT = bwd_br / 8;  // n8 tiles across a query tile
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sK = smem_u32(smem);
  const uint32_t sV = sK + bwd_bc * D * 2;
  const uint32_t sQ0 = sV + bwd_bc * D * 2;       // [2][BR][D]
  const uint32_t sO0 = sQ0 + 2 * bwd_br * D * 2;  // dO, [2][BR][D]
  const uint32_t sS = sO0 + 2 * bwd_br * D * 2;   // dS^T [BC][BR]
  float* sL =
      reinterpret_cast<float*>(smem + (2 * bwd_bc + 4 * bwd_br) * D * 2 + bwd_bc * bwd_br * 2);  // [2][BR]
  float* sD = sL + 2 * bwd_br;                                                                   // [2][BR]
  unsigned char* sS_ptr = smem + (2 * bwd_bc + 4 * bwd_br) * D * 2;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int L = a.seq_len;
  const int kb = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
  const int k0 = kb * bwd_bc;
  const std::size_t tok0 = static_cast<std::size_t>(s) * L;
  const bf16* Q = a.q + tok0 * a.ld_qkv + h * D;
  const bf16* K = a.k + tok0 * a.ld_qkv + h * D;
  const bf16* V = a.v + tok0 * a.ld_qkv + h * D;
  const bf16* dO = a.dout + tok0 * a.ld_dout + h * D;
  const float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
  const float* delta = a.delta + (static_cast<std::size_t>(s) * a.heads + h) * L;

  for (int i = tid; i < bwd_bc * CH; i += bwd_warps * 32) {
    const int r = i / CH, c = i % CH;
    const bool ok = k0 + r < L;
    const std::size_t off = static_cast<std::size_t>(k0 + r) * a.ld_qkv + c * 8;
    cp_async16(sK + swz<CH>(r, c), ok ? K + off : K, ok);
    cp_async16(sV + swz<CH>(r, c), ok ? V + off : V, ok);
  }
  auto load_q = [&](int buf, int qb) {
    const int q0 = qb * bwd_br;
    const uint32_t dq = sQ0 + buf * bwd_br * D * 2, dd = sO0 + buf * bwd_br * D * 2;
    for (int i = tid; i < bwd_br * CH; i += bwd_warps * 32) {
      const int r = i / CH, c = i % CH;
      const bool ok = q0 + r < L;
      cp_async16(dq + swz<CH>(r, c), ok ? Q + static_cast<std::size_t>(q0 + r) * a.ld_qkv + c * 8 : Q, ok);
      cp_async16(dd + swz<CH>(r, c), ok ? dO + static_cast<std::size_t>(q0 + r) * a.ld_dout + c * 8 : dO, ok);
    }
    if (tid < bwd_br) {
      const bool ok = q0 + tid < L;
      sL[buf * bwd_br + tid] = ok ? lse[q0 + tid] * log2e : 0.f;
      sD[buf * bwd_br + tid] = ok ? delta[q0 + tid] : 0.f;
    }
  };

  const int qb_first = k0 / bwd_br;
  const int n_qb = (L + bwd_br - 1) / bwd_br;
  load_q(0, qb_first);
  cp_async_commit();

  float dk[DT][4], dv[DT][4];
#pragma unroll
  for (int j = 0; j < DT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      dk[j][e] = 0.f;
      dv[j][e] = 0.f;
    }
  const int key_lo = k0 + warp * 16 + (lane >> 2);  // and key_lo + 8
  // dQ work split: rows (warp & 3) * 16 of the query tile, head_dim half (warp >> 2).
  const int dq_rows = (warp & 3) * 16;
  const int dq_col0 = (warp >> 2) * (D / 2);
  float* dq_base = a.dq_acc + tok0 * (static_cast<std::size_t>(a.heads) * D) + h * D;
  const std::size_t dq_ld = static_cast<std::size_t>(a.heads) * D;

  for (int qb = qb_first; qb < n_qb; ++qb) {
    const int buf = (qb - qb_first) & 1;
    if (qb + 1 < n_qb) load_q(buf ^ 1, qb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int q0 = qb * bwd_br;
    const uint32_t sQ = sQ0 + buf * bwd_br * D * 2, sO = sO0 + buf * bwd_br * D * 2;
    const float* lrow = sL + buf * bwd_br;
    const float* drow = sD + buf * bwd_br;

    // S^T = K Q^T and dP^T = V dO^T (16 keys x 64 queries per warp).
    float st[QT][4], dp[QT][4];
#pragma unroll
    for (int j = 0; j < QT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        st[j][e] = 0.f;
        dp[j][e] = 0.f;
      }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(sK + swz<CH>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), ka[0], ka[1], ka[2], ka[3]);
      ldmatrix_x4(sV + swz<CH>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)), va[0], va[1], va[2], va[3]);
#pragma unroll
      for (int np = 0; np < QT / 2; ++np) {
        const int qrow = np * 16 + (lane & 7) + 8 * (lane >> 4), ch = kk * 2 + ((lane >> 3) & 1);
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4(sQ + swz<CH>(qrow, ch), b0, b1, b2, b3);
        mma_bf16(st[2 * np], ka, b0, b1);
        mma_bf16(st[2 * np + 1], ka, b2, b3);
        ldmatrix_x4(sO + swz<CH>(qrow, ch), b0, b1, b2, b3);
        mma_bf16(dp[2 * np], va, b0, b1);
        mma_bf16(dp[2 * np + 1], va, b2, b3);
      }
    }
    // P^T = exp2(S^T scale log2e - lse log2e), causal (key <= query) and query < L; dS^T = P^T (dP^T -
    // delta).
#pragma unroll
    for (int j = 0; j < QT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_lo + ((e >> 1) << 3);
        const int ql = j * 8 + 2 * (lane & 3) + (e & 1);
        const int qg = q0 + ql;
        float p = 0.f;
        if (key <= qg && qg < L) p = exp2f(st[j][e] * a.scale_log2 - lrow[ql]);
        st[j][e] = p;
        dp[j][e] = p * (dp[j][e] - drow[ql]);
      }
    }
    // dV += P^T dO and dK += dS^T Q (A from registers, B = dO / Q row-major [query][d]).
#pragma unroll
    for (int kq = 0; kq < bwd_br / 16; ++kq) {
      uint32_t pa[4], sa[4];
      pa[0] = pack_bf16(st[2 * kq][0], st[2 * kq][1]);
      pa[1] = pack_bf16(st[2 * kq][2], st[2 * kq][3]);
      pa[2] = pack_bf16(st[2 * kq + 1][0], st[2 * kq + 1][1]);
      pa[3] = pack_bf16(st[2 * kq + 1][2], st[2 * kq + 1][3]);
      sa[0] = pack_bf16(dp[2 * kq][0], dp[2 * kq][1]);
      sa[1] = pack_bf16(dp[2 * kq][2], dp[2 * kq][3]);
      sa[2] = pack_bf16(dp[2 * kq + 1][0], dp[2 * kq + 1][1]);
      sa[3] = pack_bf16(dp[2 * kq + 1][2], dp[2 * kq + 1][3]);
#pragma unroll
      for (int dpair = 0; dpair < DT / 2; ++dpair) {
        const int qrow = kq * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), ch = dpair * 2 + (lane >> 4);
        uint32_t b0, b1, b2, b3;
        ldmatrix_x4_trans(sO + swz<CH>(qrow, ch), b0, b1, b2, b3);
        mma_bf16(dv[2 * dpair], pa, b0, b1);
        mma_bf16(dv[2 * dpair + 1], pa, b2, b3);
        ldmatrix_x4_trans(sQ + swz<CH>(qrow, ch), b0, b1, b2, b3);
        mma_bf16(dk[2 * dpair], sa, b0, b1);
        mma_bf16(dk[2 * dpair + 1], sa, b2, b3);
      }
    }
    // dS^T to shared memory ([key][query], 8 chunks a row) for the dQ product.
#pragma unroll
    for (int j = 0; j < QT; ++j) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int r = warp * 16 + (lane >> 2) + hi * 8;
        const int col = j * 8 + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(sS_ptr + swz<8>(r, col >> 3) + (col & 7) * 2) =
            pack_bf16(dp[j][2 * hi], dp[j][2 * hi + 1]);
      }
    }
    __syncthreads();
    // dQ[q, :] += dS[q, keys] K[keys, :]: A = dS from the transposed store, B = K row-major [key][d].
    const int dq_row = q0 + dq_rows + (lane >> 2);
#pragma unroll
    for (int chunk = 0; chunk < D / 64; ++chunk) {
      float acc[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
      const int c0 = dq_col0 + chunk * 32;
#pragma unroll
      for (int kk = 0; kk < bwd_bc / 16; ++kk) {
        uint32_t da[4];
        ldmatrix_x4_trans(
            sS + swz<8>(kk * 16 + (lane & 7) + 8 * (lane >> 4), dq_rows / 8 + ((lane >> 3) & 1)), da[0],
            da[1], da[2], da[3]);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4_trans(
              sK + swz<CH>(kk * 16 + (lane & 7) + 8 * ((lane >> 3) & 1), (c0 + np * 16) / 8 + (lane >> 4)),
              b0, b1, b2, b3);
          mma_bf16(acc[2 * np], da, b0, b1);
          mma_bf16(acc[2 * np + 1], da, b2, b3);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = c0 + j * 8 + 2 * (lane & 3);
        if (dq_row < L)
          red_add_v2(dq_base + static_cast<std::size_t>(dq_row) * dq_ld + col, acc[j][0], acc[j][1]);
        if (dq_row + 8 < L)
          red_add_v2(dq_base + static_cast<std::size_t>(dq_row + 8) * dq_ld + col, acc[j][2], acc[j][3]);
      }
    }
    __syncthreads();  // Q / dO / dS buffers are rewritten next
  }

  // dK = scale dS^T Q, dV = P^T dO.
  bf16* dK = a.dk + tok0 * a.ld_dqkv + h * D;
  bf16* dV = a.dv + tok0 * a.ld_dqkv + h * D;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int key = key_lo + hi * 8;
    if (key >= L) continue;
#pragma unroll
    for (int j = 0; j < DT; ++j) {
      const int col = j * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(dK + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dk[j][2 * hi] * a.scale, dk[j][2 * hi + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dV + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dv[j][2 * hi], dv[j][2 * hi + 1]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// wgmma versions (sm_90a): each warpgroup owns 64 rows of the product; tiles in shared memory use the
// 128-byte swizzle of dev::sw128 (written by cp.async, then fence.proxy.async before the tensor cores
// read them). Probabilities stay in registers as the A operand of the second product.
// ---------------------------------------------------------------------------------------------

template <int N>
__device__ __forceinline__ void keep(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void keep(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

__device__ __forceinline__ unsigned char* align1024(unsigned char* p) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(p) + 1023) &
                                          ~std::uintptr_t{1023});
}

constexpr int wfwd_br = 128, wfwd_bc = 128;

template <int D>
constexpr int wfwd_smem_bytes() {
  return 1024 + (wfwd_br + 4 * wfwd_bc) * D * 2;
}

// O (64 x D per warpgroup) += P V with P from registers; D = 64 or 128.
template <int D>
__device__ __forceinline__ void wgmma_pv(float (&o)[D / 2], const uint32_t (&p)[4], uint64_t desc) {
  if constexpr (D == 128) {
    wgmma_m64n128k16_rs<1>(o, p, desc, 1);
  } else {
    wgmma_m64n64k16_rs<1>(o, p, desc, 1);
  }
}

// Forward: 2 warpgroups x 64 queries, 128-key tiles double-buffered.
template <int D>
__global__ void __launch_bounds__(256, 1) attention_forward_wgmma_kernel(const fwd_args a) {
  constexpr int BR = wfwd_br, BC = wfwd_bc, CH = D / 8;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  const uint32_t sQ = smem_u32(smem);    // [D/64][BR][128 B]
  const uint32_t sK0 = sQ + BR * D * 2;  // [2][D/64][BC][128 B]
  const uint32_t sV0 = sK0 + 2 * BC * D * 2;
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int qb = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, s = blockIdx.z;
  const int q0 = qb * BR;
  const std::size_t tok0 = static_cast<std::size_t>(s) * L;
  const bf16* Q = a.q + tok0 * a.ld_qkv + h * D;
  const bf16* K = a.k + tok0 * a.ld_qkv + h * D;
  const bf16* V = a.v + tok0 * a.ld_qkv + h * D;

  for (int i = tid; i < BR * CH; i += 256) {
    const int r = i / CH, c = i % CH;
    const bool ok = q0 + r < L;
    cp_async16(sQ + sw128(BR, r, c * 8), ok ? Q + static_cast<std::size_t>(q0 + r) * a.ld_qkv + c * 8 : Q,
               ok);
  }
  auto load_kv = [&](int buf, int kb) {
    const int k0 = kb * BC;
    const uint32_t dk = sK0 + buf * BC * D * 2, dv = sV0 + buf * BC * D * 2;
    for (int i = tid; i < BC * CH; i += 256) {
      const int r = i / CH, c = i % CH;
      const bool ok = k0 + r < L;
      const std::size_t off = static_cast<std::size_t>(k0 + r) * a.ld_qkv + c * 8;
      cp_async16(dk + sw128(BC, r, c * 8), ok ? K + off : K, ok);
      cp_async16(dv + sw128(BC, r, c * 8), ok ? V + off : V, ok);
    }
  };
  const int n_kb = (min(L, q0 + BR) - 1) / BC + 1;
  load_kv(0, 0);
  cp_async_commit();

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row_lo = q0 + wg * 64 + warp * 16 + (lane >> 2);

  for (int kb = 0; kb < n_kb; ++kb) {
    if (kb + 1 < n_kb) load_kv((kb + 1) & 1, kb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
    const uint32_t sK = sK0 + (kb & 1) * BC * D * 2, sV = sV0 + (kb & 1) * BC * D * 2;
    const int k0 = kb * BC;

    float sc[BC / 2];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint64_t da = make_desc(sQ + (kk >> 2) * BR * 128 + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = make_desc(sK + (kk >> 2) * BC * 128 + (kk & 3) * 32, 16, 1024);
      wgmma_m64n128k16<0, 0>(sc, da, db, kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    keep(sc);

    const bool diag = k0 + BC - 1 > q0 + wg * 64;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = row_lo + hi * 8;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < BC / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = sc[4 * j + 2 * hi + e] * a.scale_log2;
          if (diag && k0 + j * 8 + 2 * (lane & 3) + e > row) x = -INFINITY;
          sc[4 * j + 2 * hi + e] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[hi], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m[hi] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < BC / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(sc[4 * j + 2 * hi + e] - m_use);
          sc[4 * j + 2 * hi + e] = p;
          sum += p;
        }
      }
      l[hi] = l[hi] * alpha + sum;
      m[hi] = m_new;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[4 * j + 2 * hi] *= alpha;
        o[4 * j + 2 * hi + 1] *= alpha;
      }
    }
    uint32_t pa[BC / 16][4];
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      pa[kk][0] = pack_bf16(sc[8 * kk], sc[8 * kk + 1]);
      pa[kk][1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) wgmma_pv<D>(o, pa[kk], make_desc(sV + kk * 2048, BC * 128, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    keep(o);
    keep(pa);
    __syncthreads();  // both warpgroups are done with this K/V buffer before it is refilled
  }

  bf16* out = a.out + tok0 * a.ld_out + h * D;
  float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float sum = l[hi];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = row_lo + hi * 8;
    if (row < L) {
      const float inv = 1.f / sum;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int col = j * 8 + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(out + static_cast<std::size_t>(row) * a.ld_out + col) =
            pack_bf16(o[4 * j + 2 * hi] * inv, o[4 * j + 2 * hi + 1] * inv);
      }
      if ((lane & 3) == 0) lse[row] = (m[hi] + log2f(sum)) * ln2;
    }
  }
}

constexpr int wbwd_bc = 128, wbwd_br = 64;

template <int D>
constexpr int wbwd_smem_bytes() {
  return 1024 + (2 * wbwd_bc + 4 * wbwd_br) * D * 2 + wbwd_bc * wbwd_br * 2 + 4 * wbwd_br * 4;
}

// acc (64 x D) += A (registers) B with B = a [rows][D] tile read N-major (D = 64 or 128).
template <int D>
__device__ __forceinline__ void wgmma_rs_d(float (&acc)[D / 2], const uint32_t (&a)[4], uint64_t desc) {
  if constexpr (D == 128) {
    wgmma_m64n128k16_rs<1>(acc, a, desc, 1);
  } else {
    wgmma_m64n64k16_rs<1>(acc, a, desc, 1);
  }
}

// Backward: 2 warpgroups x 64 keys; 64-query tiles double-buffered. Per query tile each warpgroup computes
// S^T = K Q^T and dP^T = V dO^T (m64n64), then dV += P^T dO and dK += dS^T Q (A from registers), stores dS^T
// for the CTA, and adds its share of dQ = dS K (A = dS^T read M-major) to the fp32 accumulator.
template <int D>
__global__ void __launch_bounds__(256, 1) attention_backward_wgmma_kernel(const bwd_args a) {
  constexpr int BC = wbwd_bc, BR = wbwd_br, CH = D / 8;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  const uint32_t sK = smem_u32(smem);  // [D/64][BC][128 B]
  const uint32_t sV = sK + BC * D * 2;
  const uint32_t sQ0 = sV + BC * D * 2;  // [2][D/64][BR][128 B]
  const uint32_t sO0 = sQ0 + 2 * BR * D * 2;
  const uint32_t sS = sO0 + 2 * BR * D * 2;  // dS^T [BC][BR]: one 64-column block
  unsigned char* sS_ptr = smem + (2 * BC + 4 * BR) * D * 2;
  float* sL = reinterpret_cast<float*>(sS_ptr + BC * BR * 2);
  float* sD = sL + 2 * BR;

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int kb = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
  const int k0 = kb * BC;
  const std::size_t tok0 = static_cast<std::size_t>(s) * L;
  const bf16* Q = a.q + tok0 * a.ld_qkv + h * D;
  const bf16* K = a.k + tok0 * a.ld_qkv + h * D;
  const bf16* V = a.v + tok0 * a.ld_qkv + h * D;
  const bf16* dO = a.dout + tok0 * a.ld_dout + h * D;
  const float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
  const float* delta = a.delta + (static_cast<std::size_t>(s) * a.heads + h) * L;

  for (int i = tid; i < BC * CH; i += 256) {
    const int r = i / CH, c = i % CH;
    const bool ok = k0 + r < L;
    const std::size_t off = static_cast<std::size_t>(k0 + r) * a.ld_qkv + c * 8;
    cp_async16(sK + sw128(BC, r, c * 8), ok ? K + off : K, ok);
    cp_async16(sV + sw128(BC, r, c * 8), ok ? V + off : V, ok);
  }
  auto load_q = [&](int buf, int qb) {
    const int q0 = qb * BR;
    const uint32_t dq = sQ0 + buf * BR * D * 2, dd = sO0 + buf * BR * D * 2;
    for (int i = tid; i < BR * CH; i += 256) {
      const int r = i / CH, c = i % CH;
      const bool ok = q0 + r < L;
      cp_async16(dq + sw128(BR, r, c * 8), ok ? Q + static_cast<std::size_t>(q0 + r) * a.ld_qkv + c * 8 : Q,
                 ok);
      cp_async16(dd + sw128(BR, r, c * 8),
                 ok ? dO + static_cast<std::size_t>(q0 + r) * a.ld_dout + c * 8 : dO, ok);
    }
    if (tid < BR) {
      const bool ok = q0 + tid < L;
      sL[buf * BR + tid] = ok ? lse[q0 + tid] * log2e : 0.f;
      sD[buf * BR + tid] = ok ? delta[q0 + tid] : 0.f;
    }
  };
  const int qb_first = k0 / BR;
  const int n_qb = (L + BR - 1) / BR;
  load_q(0, qb_first);
  cp_async_commit();

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) {
    dk[i] = 0.f;
    dv[i] = 0.f;
  }
  const int key_lo = k0 + wg * 64 + warp * 16 + (lane >> 2);  // and key_lo + 8
  float* dq_base = a.dq_acc + tok0 * (static_cast<std::size_t>(a.heads) * D) + h * D;
  const std::size_t dq_ld = static_cast<std::size_t>(a.heads) * D;

  for (int qb = qb_first; qb < n_qb; ++qb) {
    const int buf = (qb - qb_first) & 1;
    if (qb + 1 < n_qb) load_q(buf ^ 1, qb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
    const int q0 = qb * BR;
    const uint32_t sQ = sQ0 + buf * BR * D * 2, sO = sO0 + buf * BR * D * 2;
    const float* lrow = sL + buf * BR;
    const float* drow = sD + buf * BR;

    float st[32], dp[32];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(st, make_desc(sK + koff, 16, 1024), make_desc(sQ + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(dp, make_desc(sV + koff, 16, 1024), make_desc(sO + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    keep(st);
    keep(dp);

    uint32_t pa[4][4], sa[4][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_lo + ((e >> 1) << 3);
        const int ql = j * 8 + 2 * (lane & 3) + (e & 1);
        const int qg = q0 + ql;
        float p = 0.f;
        if (key <= qg && qg < L) p = exp2f(st[4 * j + e] * a.scale_log2 - lrow[ql]);
        st[4 * j + e] = p;
        dp[4 * j + e] = p * (dp[4 * j + e] - drow[ql]);
      }
    }
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        pa[kq][r] = pack_bf16(st[8 * kq + 2 * r], st[8 * kq + 2 * r + 1]);
        sa[kq][r] = pack_bf16(dp[8 * kq + 2 * r], dp[8 * kq + 2 * r + 1]);
      }
    }
    wgmma_fence();
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dv, pa[kq], make_desc(sO + kq * 2048, BR * 128, 1024));
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dk, sa[kq], make_desc(sQ + kq * 2048, BR * 128, 1024));
    wgmma_commit();
    // dS^T (this warpgroup's 64 keys) to shared memory while the MMAs run: registers are only read.
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int key = wg * 64 + warp * 16 + (lane >> 2) + ((r & 1) << 3);
        const int col = kq * 16 + ((r >> 1) << 3) + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(sS_ptr + sw128(BC, key, col)) = sa[kq][r];
      }
    }
    wgmma_wait<0>();
    keep(dv);
    keep(dk);
    keep(pa);
    keep(sa);
    fence_proxy_async();
    __syncthreads();

    // dQ[q0 .., cols] += dS K: D = 128: warpgroup w takes head_dim columns [64 w, 64 w + 64) over all keys;
    // D = 64: warpgroup w takes keys [64 w, 64 w + 64) over all columns.
    float dqa[32];
    wgmma_fence();
    constexpr int ksteps = D == 128 ? BC / 16 : BC / 32;
#pragma unroll
    for (int i = 0; i < ksteps; ++i) {
      const int kk = D == 128 ? i : wg * (BC / 32) + i;
      const uint32_t boff = (D == 128 ? wg * BC * 128 : 0) + kk * 2048;
      wgmma_m64n64k16<1, 1>(dqa, make_desc(sS + kk * 2048, 8192, 1024), make_desc(sK + boff, BC * 128, 1024),
                            i > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    keep(dqa);
    const int col0 = D == 128 ? wg * 64 : 0;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = q0 + warp * 16 + (lane >> 2) + hi * 8;
      if (row >= L) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = col0 + j * 8 + 2 * (lane & 3);
        red_add_v2(dq_base + static_cast<std::size_t>(row) * dq_ld + col, dqa[4 * j + 2 * hi],
                   dqa[4 * j + 2 * hi + 1]);
      }
    }
  }

  bf16* dK = a.dk + tok0 * a.ld_dqkv + h * D;
  bf16* dV = a.dv + tok0 * a.ld_dqkv + h * D;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int key = key_lo + hi * 8;
    if (key >= L) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(dK + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dk[4 * j + 2 * hi] * a.scale, dk[4 * j + 2 * hi + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dV + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dv[4 * j + 2 * hi], dv[4 * j + 2 * hi + 1]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pipelined wgmma versions (the defaults).
//
// Forward, "ping-pong": Q and a 3-deep ring of 128-key K/V tiles arrive by TMA (one thread issues them,
// mbarriers signal full / empty), so the two warpgroups need no CTA-wide barrier; named barriers make them
// take turns issuing the Q K^T product, which keeps one warpgroup's softmax under the other's MMAs.
//
// Backward: the dQ product of query tile i (A = dS^T of both warpgroups, from a double-buffered shared
// tile) is issued at the start of tile i + 1 together with its S^T / dP^T products, so one CTA barrier per
// tile suffices and the three products run back to back; dQ goes to the fp32 accumulator by vector atomics.
// (Tried and dropped: staging dQ rows in shared memory for bulk asynchronous reductions,
// cp.reduce.async.bulk, 64 rows of 256 bytes per warpgroup and tile, made the backward 25% slower.)
// ---------------------------------------------------------------------------------------------

constexpr int pfwd_stages = 3;

template <int D>
constexpr int pfwd_smem_bytes() {
  return 1024 + (wfwd_br + 2 * pfwd_stages * wfwd_bc) * D * 2 + (1 + 2 * pfwd_stages) * 8;
}

// Shared by the three ping-pong kernels: an mbarrier ring of ST stages (full: the stage's TMA bytes
// landed; empty: all 8 warps are done with it) plus one barrier for the operands loaded once. Thread 0
// runs it; a __syncthreads() must follow before any thread waits on the barriers.
template <int ST>
__device__ __forceinline__ void init_tile_ring(uint64_t* once, uint64_t* full, uint64_t* empty) {
  mbar_init(once, 1);
  for (int i = 0; i < ST; ++i) {
    mbar_init(&full[i], 1);
    mbar_init(&empty[i], 8);  // one arrival per warp
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Head h's ROWS x D tile of two [tokens, heads * D] tensors (Q and dO, or K and V) from token row `row`,
// each as D/64 TMA boxes of ROWS x 128 bytes, completing on `bar` (one expect_tx for both).
template <int D, int ROWS>
__device__ __forceinline__ void tma_load_head_tiles(unsigned char* dst_a, const CUtensorMap* map_a,
                                                    unsigned char* dst_b, const CUtensorMap* map_b,
                                                    uint64_t* bar, int h, int row) {
  mbar_expect_tx(bar, 2 * ROWS * D * 2);
#pragma unroll
  for (int at = 0; at < D / 64; ++at) {
    tma_load_2d(dst_a + at * ROWS * 128, map_a, bar, h * D + 64 * at, row);
    tma_load_2d(dst_b + at * ROWS * 128, map_b, bar, h * D + 64 * at, row);
  }
}

template <int D>
__global__ void __launch_bounds__(256, 1)
    attention_forward_pingpong_kernel(const __grid_constant__ CUtensorMap tq,
                                      const __grid_constant__ CUtensorMap tk,
                                      const __grid_constant__ CUtensorMap tv, const fwd_args a) {
  constexpr int BR = wfwd_br, BC = wfwd_bc, ST = pfwd_stages;
  constexpr int tile_bytes = BC * D * 2;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  unsigned char* pQ = smem;             // [D/64][BR][128 B]
  unsigned char* pK = pQ + BR * D * 2;  // [ST][D/64][BC][128 B]
  unsigned char* pV = pK + ST * tile_bytes;
  uint64_t* qfull = reinterpret_cast<uint64_t*>(pV + ST * tile_bytes);
  uint64_t* full = qfull + 1;
  uint64_t* empty = full + ST;
  const uint32_t sQ = smem_u32(pQ);
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int qb = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, s = blockIdx.z;
  const int q0 = qb * BR;
  const int tok0 = s * L;
  const int n_kb = (min(L, q0 + BR) - 1) / BC + 1;

  if (tid == 0) init_tile_ring<ST>(qfull, full, empty);
  __syncthreads();
  auto issue_kv = [&](int t) {
    const int st = t % ST;
    tma_load_head_tiles<D, BC>(pK + st * tile_bytes, &tk, pV + st * tile_bytes, &tv, &full[st], h,
                               tok0 + t * BC);
  };
  if (tid == 0) {
    mbar_expect_tx(qfull, BR * D * 2);
#pragma unroll
    for (int at = 0; at < D / 64; ++at)
      tma_load_2d(pQ + at * BR * 128, &tq, qfull, h * D + 64 * at, tok0 + q0);
    issue_kv(0);
    if (n_kb > 1) issue_kv(1);
  }
  if (wg == 1) named_bar_arrive(1, 256);  // warpgroup 0 takes the first turn
  mbar_wait(qfull, 0);

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row_lo = q0 + wg * 64 + warp * 16 + (lane >> 2);

  for (int kb = 0; kb < n_kb; ++kb) {
    const int st = kb % ST;
    mbar_wait(&full[st], (kb / ST) & 1);
    const uint32_t sK = smem_u32(pK + st * tile_bytes), sV = smem_u32(pV + st * tile_bytes);
    const int k0 = kb * BC;

    float sc[BC / 2];
    named_bar_sync(1 + wg, 256);  // my turn on the tensor cores
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint64_t da = make_desc(sQ + (kk >> 2) * BR * 128 + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = make_desc(sK + (kk >> 2) * BC * 128 + (kk & 3) * 32, 16, 1024);
      wgmma_m64n128k16<0, 0>(sc, da, db, kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    if (wg == 0 || kb + 1 < n_kb) named_bar_arrive(2 - wg, 256);  // the other warpgroup's turn
    wgmma_wait<0>();
    keep(sc);

    const bool diag = k0 + BC - 1 > q0 + wg * 64;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = row_lo + hi * 8;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < BC / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float x = sc[4 * j + 2 * hi + e] * a.scale_log2;
          if (diag && k0 + j * 8 + 2 * (lane & 3) + e > row) x = -INFINITY;
          sc[4 * j + 2 * hi + e] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[hi], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(m[hi] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < BC / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(sc[4 * j + 2 * hi + e] - m_use);
          sc[4 * j + 2 * hi + e] = p;
          sum += p;
        }
      }
      l[hi] = l[hi] * alpha + sum;
      m[hi] = m_new;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[4 * j + 2 * hi] *= alpha;
        o[4 * j + 2 * hi + 1] *= alpha;
      }
    }
    uint32_t pa[BC / 16][4];
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      pa[kk][0] = pack_bf16(sc[8 * kk], sc[8 * kk + 1]);
      pa[kk][1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) wgmma_pv<D>(o, pa[kk], make_desc(sV + kk * 2048, BC * 128, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    keep(o);
    keep(pa);
    if (lane == 0) mbar_arrive(&empty[st]);
    if (tid == 0 && kb + ST - 1 < n_kb) {
      const int t = kb + ST - 1;  // refill the stage tile kb - 1 used, once both warpgroups let go of it
      if (t >= ST) mbar_wait(&empty[t % ST], ((t / ST) + 1) & 1);
      issue_kv(t);
    }
  }

  bf16* out = a.out + static_cast<std::size_t>(tok0) * a.ld_out + h * D;
  float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float sum = l[hi];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = row_lo + hi * 8;
    if (row < L) {
      const float inv = 1.f / sum;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int col = j * 8 + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(out + static_cast<std::size_t>(row) * a.ld_out + col) =
            pack_bf16(o[4 * j + 2 * hi] * inv, o[4 * j + 2 * hi + 1] * inv);
      }
      if ((lane & 3) == 0) lse[row] = (m[hi] + log2f(sum)) * ln2;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Split backward (the default): dK / dV in one kernel, dQ in another, both ping-pong, no atomics.
// Each recomputes the probabilities, so a tile pair costs seven products instead of five, but nothing is
// accumulated across CTAs: dQ is written once in bf16, with no fp32 workspace to clear and convert. On an
// H100 this beat every single-kernel backward here (docs/PERFORMANCE.md). Tried and slower in the same
// call: either kernel with cp.async and two CTA barriers a tile instead of the ping-pong (dQ: +11%,
// dK / dV: +21% on the whole backward at head_dim 128).
// ---------------------------------------------------------------------------------------------

constexpr int wdq_br = 128, wdq_bc = 128;  // the dQ kernel's query rows and key tile

// dQ: 2 warpgroups x 64 queries over 128-key tiles. Per key tile each warpgroup computes S = Q K^T and
// dP = dO V^T (m64n128), dS = P (dP - delta) with P = exp2(S scale - lse), and dQ += dS K with dS from
// registers. Q and dO arrive by TMA, K/V tiles through a ring of ST stages (full / empty mbarriers), and
// the two warpgroups take turns issuing S and dP, so one's elementwise work and dQ product run under the
// other's MMAs. Warpgroup 1 trails, so its first thread refills a stage as soon as it has let go of it.
template <int D>
constexpr int pdq_stages = D == 128 ? 2 : 4;

template <int D>
constexpr int pdq_smem_bytes() {
  return 1024 + (2 * wdq_br + 2 * pdq_stages<D> * wdq_bc) * D * 2 + (1 + 2 * pdq_stages<D>)*8;
}

template <int D>
__global__ void __launch_bounds__(256, 1)
    attention_backward_dq_pingpong_kernel(const __grid_constant__ CUtensorMap tq,
                                          const __grid_constant__ CUtensorMap tdo,
                                          const __grid_constant__ CUtensorMap tk,
                                          const __grid_constant__ CUtensorMap tv, const bwd_args a,
                                          bf16* dq) {
  constexpr int BR = wdq_br, BC = wdq_bc, ST = pdq_stages<D>;
  constexpr int tile_bytes = BC * D * 2;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  unsigned char* pQ = smem;             // [D/64][BR][128 B]
  unsigned char* pO = pQ + BR * D * 2;  // dO, the same layout
  unsigned char* pK = pO + BR * D * 2;  // [ST][D/64][BC][128 B]
  unsigned char* pV = pK + ST * tile_bytes;
  uint64_t* qfull = reinterpret_cast<uint64_t*>(pV + ST * tile_bytes);
  uint64_t* full = qfull + 1;
  uint64_t* empty = full + ST;
  const uint32_t sQ = smem_u32(pQ), sO = smem_u32(pO);
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int qb = gridDim.x - 1 - blockIdx.x;  // longest rows first
  const int h = blockIdx.y, s = blockIdx.z;
  const int q0 = qb * BR;
  const int tok0 = s * L;
  const int n_kb = (min(L, q0 + BR) - 1) / BC + 1;

  if (tid == 0) init_tile_ring<ST>(qfull, full, empty);
  __syncthreads();
  auto issue_kv = [&](int t) {
    const int st = t % ST;
    tma_load_head_tiles<D, BC>(pK + st * tile_bytes, &tk, pV + st * tile_bytes, &tv, &full[st], h,
                               tok0 + t * BC);
  };
  if (tid == 0) {
    tma_load_head_tiles<D, BR>(pQ, &tq, pO, &tdo, qfull, h, tok0 + q0);
    for (int t = 0; t < ST && t < n_kb; ++t) issue_kv(t);
  }
  if (wg == 1) named_bar_arrive(1, 256);  // warpgroup 0 takes the first turn

  const int row_lo = q0 + wg * 64 + warp * 16 + (lane >> 2);
  const float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
  const float* delta = a.delta + (static_cast<std::size_t>(s) * a.heads + h) * L;
  float lrow[2], drow[2];
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = row_lo + hi * 8;
    lrow[hi] = row < L ? lse[row] * log2e : 0.f;
    drow[hi] = row < L ? delta[row] : 0.f;
  }
  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
  mbar_wait(qfull, 0);

  for (int kb = 0; kb < n_kb; ++kb) {
    const int st = kb % ST;
    mbar_wait(&full[st], (kb / ST) & 1);
    const uint32_t sK = smem_u32(pK + st * tile_bytes), sV = smem_u32(pV + st * tile_bytes);
    const int k0 = kb * BC;

    float sc[BC / 2], dp[BC / 2];
    named_bar_sync(1 + wg, 256);  // my turn on the tensor cores
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t aoff = (kk >> 2) * BR * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t boff = (kk >> 2) * BC * 128 + (kk & 3) * 32;
      wgmma_m64n128k16<0, 0>(sc, make_desc(sQ + aoff, 16, 1024), make_desc(sK + boff, 16, 1024),
                             kk > 0 ? 1 : 0);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t aoff = (kk >> 2) * BR * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t boff = (kk >> 2) * BC * 128 + (kk & 3) * 32;
      wgmma_m64n128k16<0, 0>(dp, make_desc(sO + aoff, 16, 1024), make_desc(sV + boff, 16, 1024),
                             kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    if (wg == 0 || kb + 1 < n_kb) named_bar_arrive(2 - wg, 256);  // the other warpgroup's turn
    wgmma_wait<0>();
    keep(sc);
    keep(dp);

    // Keys past a row are masked. Rows past L may hold the next sequence's tokens (TMA reads on): their dS
    // may be anything, but a row of dS only reaches its own row of dQ, which is not stored.
    const bool diag = k0 + BC - 1 > q0 + wg * 64;
#pragma unroll
    for (int j = 0; j < BC / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int hi = e >> 1;
        const int key = k0 + j * 8 + 2 * (lane & 3) + (e & 1);
        float p = exp2f(sc[4 * j + e] * a.scale_log2 - lrow[hi]);
        if (diag && key > row_lo + hi * 8) p = 0.f;
        sc[4 * j + e] = p * (dp[4 * j + e] - drow[hi]);
      }
    }
    uint32_t ds[BC / 16][4];
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      ds[kk][0] = pack_bf16(sc[8 * kk], sc[8 * kk + 1]);
      ds[kk][1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
      ds[kk][2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
      ds[kk][3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) wgmma_pv<D>(acc, ds[kk], make_desc(sK + kk * 2048, BC * 128, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    keep(acc);
    keep(ds);
    if (lane == 0) mbar_arrive(&empty[st]);
    if (tid == 128 && kb + ST < n_kb) {
      mbar_wait(&empty[st], (kb / ST) & 1);  // every warp is done with tile kb: its stage takes kb + ST
      issue_kv(kb + ST);
    }
  }

  bf16* out = dq + static_cast<std::size_t>(tok0) * a.ld_dqkv + h * D;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int row = row_lo + hi * 8;
    if (row >= L) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(out + static_cast<std::size_t>(row) * a.ld_dqkv + col) =
          pack_bf16(acc[4 * j + 2 * hi] * a.scale, acc[4 * j + 2 * hi + 1] * a.scale);
    }
  }
}

// dK and dV: the basic kernel's first four products (S^T, dP^T, dV += P^T dO, dK += dS^T Q) with the
// forward's pipeline. K and V of the CTA's 128 keys arrive once by TMA, 64-query tiles of Q and dO through a
// ring of ST stages (full / empty mbarriers); the two warpgroups (64 keys each) take turns issuing S^T and
// dP^T, so one's elementwise work and dV / dK products run under the other's MMAs. Each warpgroup stages the
// tile's log-sum-exp and delta in shared memory for itself (named barrier 3 + wg).
template <int D>
constexpr int pkv_stages = 4;

template <int D>
constexpr int pkv_smem_bytes() {
  return 1024 + (2 * wbwd_bc + 2 * pkv_stages<D> * wbwd_br) * D * 2 + 2 * 2 * 2 * wbwd_br * 4 +
         (1 + 2 * pkv_stages<D>)*8;
}

template <int D>
__global__ void __launch_bounds__(256, 1)
    attention_backward_dkdv_pingpong_kernel(const __grid_constant__ CUtensorMap tq,
                                            const __grid_constant__ CUtensorMap tdo,
                                            const __grid_constant__ CUtensorMap tk,
                                            const __grid_constant__ CUtensorMap tv, const bwd_args a) {
  constexpr int BC = wbwd_bc, BR = wbwd_br, ST = pkv_stages<D>;
  constexpr int tile_bytes = BR * D * 2;  // one operand of one query tile
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  unsigned char* pK = smem;  // [D/64][BC][128 B]
  unsigned char* pV = pK + BC * D * 2;
  unsigned char* pQ = pV + BC * D * 2;  // [ST][D/64][BR][128 B]
  unsigned char* pO = pQ + ST * tile_bytes;
  float* sRow = reinterpret_cast<float*>(pO + ST * tile_bytes);  // [wg][buf][lse 64 | delta 64]
  uint64_t* kvfull = reinterpret_cast<uint64_t*>(sRow + 2 * 2 * 2 * BR);
  uint64_t* full = kvfull + 1;
  uint64_t* empty = full + ST;
  const uint32_t sK = smem_u32(pK), sV = smem_u32(pV);
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int kb = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
  const int k0 = kb * BC;
  const int tok0 = s * L;
  const int qb_first = k0 / BR;
  const int n_qb = (L + BR - 1) / BR;
  const int n_t = n_qb - qb_first;  // query tiles this CTA walks
  const float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
  const float* delta = a.delta + (static_cast<std::size_t>(s) * a.heads + h) * L;

  if (tid == 0) init_tile_ring<ST>(kvfull, full, empty);
  __syncthreads();
  auto issue_q = [&](int t) {  // the CTA's t-th query tile
    const int st = t % ST, q0 = (qb_first + t) * BR;
    tma_load_head_tiles<D, BR>(pQ + st * tile_bytes, &tq, pO + st * tile_bytes, &tdo, &full[st], h,
                               tok0 + q0);
  };
  if (tid == 0) {
    tma_load_head_tiles<D, BC>(pK, &tk, pV, &tv, kvfull, h, tok0 + k0);
    for (int t = 0; t < ST && t < n_t; ++t) issue_q(t);
  }
  if (wg == 1) named_bar_arrive(1, 256);  // warpgroup 0 takes the first turn

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) {
    dk[i] = 0.f;
    dv[i] = 0.f;
  }
  const int key_lo = k0 + wg * 64 + warp * 16 + (lane >> 2);  // and key_lo + 8
  const int wtid = tid & 127;
  mbar_wait(kvfull, 0);

  for (int t = 0; t < n_t; ++t) {
    const int st = t % ST;
    const int q0 = (qb_first + t) * BR;
    // This warpgroup's copy of the tile's row constants (buffer t & 1: the last reader of the other one
    // passed this warpgroup's barrier of the previous tile).
    float* rows = sRow + (wg * 2 + (t & 1)) * 2 * BR;
    {
      const int q = q0 + (wtid & 63);
      const float* src = wtid < 64 ? lse : delta;
      const float x = q < L ? src[q] : 0.f;
      rows[wtid] = wtid < 64 ? x * log2e : x;
    }
    mbar_wait(&full[st], (t / ST) & 1);
    const uint32_t sQ = smem_u32(pQ + st * tile_bytes), sO = smem_u32(pO + st * tile_bytes);

    float sT[32], dpT[32];
    named_bar_sync(1 + wg, 256);  // my turn on the tensor cores
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(sT, make_desc(sK + koff, 16, 1024), make_desc(sQ + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(dpT, make_desc(sV + koff, 16, 1024), make_desc(sO + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    if (wg == 0 || t + 1 < n_t) named_bar_arrive(2 - wg, 256);  // the other warpgroup's turn
    named_bar_sync(3 + wg, 128);                                // the row constants are in
    wgmma_wait<0>();
    keep(sT);
    keep(dpT);

    // Keys after a query are masked, and so are queries past L (TMA may have read the next sequence).
    const bool edge = q0 < k0 + wg * 64 + 63 || q0 + BR > L;
    const float* lrow = rows;
    const float* drow = rows + BR;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_lo + ((e >> 1) << 3);
        const int ql = j * 8 + 2 * (lane & 3) + (e & 1);
        float p = exp2f(sT[4 * j + e] * a.scale_log2 - lrow[ql]);
        if (edge && (key > q0 + ql || q0 + ql >= L)) p = 0.f;
        sT[4 * j + e] = p;
        dpT[4 * j + e] = p * (dpT[4 * j + e] - drow[ql]);
      }
    }
    uint32_t pa[4][4], sa[4][4];
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        pa[kq][r] = pack_bf16(sT[8 * kq + 2 * r], sT[8 * kq + 2 * r + 1]);
        sa[kq][r] = pack_bf16(dpT[8 * kq + 2 * r], dpT[8 * kq + 2 * r + 1]);
      }
    }
    wgmma_fence();
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dv, pa[kq], make_desc(sO + kq * 2048, BR * 128, 1024));
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dk, sa[kq], make_desc(sQ + kq * 2048, BR * 128, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    keep(dv);
    keep(dk);
    keep(pa);
    keep(sa);
    if (lane == 0) mbar_arrive(&empty[st]);
    if (tid == 128 && t + ST < n_t) {
      mbar_wait(&empty[st], (t / ST) & 1);  // every warp is done with tile t: its stage takes t + ST
      issue_q(t + ST);
    }
  }

  bf16* dK = a.dk + static_cast<std::size_t>(tok0) * a.ld_dqkv + h * D;
  bf16* dV = a.dv + static_cast<std::size_t>(tok0) * a.ld_dqkv + h * D;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int key = key_lo + hi * 8;
    if (key >= L) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(dK + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dk[4 * j + 2 * hi] * a.scale, dk[4 * j + 2 * hi + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dV + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dv[4 * j + 2 * hi], dv[4 * j + 2 * hi + 1]);
    }
  }
}

template <int D>
constexpr int pbwd_smem_bytes() {
  return 1024 + (2 * wbwd_bc + 4 * wbwd_br) * D * 2 + 2 * wbwd_bc * wbwd_br * 2 + 4 * wbwd_br * 4;
}

template <int D>
__global__ void __launch_bounds__(256, 1) attention_backward_pipelined_kernel(const bwd_args a) {
  constexpr int BC = wbwd_bc, BR = wbwd_br, CH = D / 8;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align1024(smem_raw);
  const uint32_t sK = smem_u32(smem);  // [D/64][BC][128 B]
  const uint32_t sV = sK + BC * D * 2;
  const uint32_t sQ0 = sV + BC * D * 2;  // [2][D/64][BR][128 B]
  const uint32_t sO0 = sQ0 + 2 * BR * D * 2;
  const uint32_t sS0 = sO0 + 2 * BR * D * 2;  // dS^T [2][BC][BR]
  unsigned char* pS0 = smem + (2 * BC + 4 * BR) * D * 2;
  float* sL = reinterpret_cast<float*>(pS0 + 2 * BC * BR * 2);
  float* sD = sL + 2 * BR;

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int L = a.seq_len;
  const int kb = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
  const int k0 = kb * BC;
  const std::size_t tok0 = static_cast<std::size_t>(s) * L;
  const bf16* Q = a.q + tok0 * a.ld_qkv + h * D;
  const bf16* K = a.k + tok0 * a.ld_qkv + h * D;
  const bf16* V = a.v + tok0 * a.ld_qkv + h * D;
  const bf16* dO = a.dout + tok0 * a.ld_dout + h * D;
  const float* lse = a.lse + (static_cast<std::size_t>(s) * a.heads + h) * L;
  const float* delta = a.delta + (static_cast<std::size_t>(s) * a.heads + h) * L;

  for (int i = tid; i < BC * CH; i += 256) {
    const int r = i / CH, c = i % CH;
    const bool ok = k0 + r < L;
    const std::size_t off = static_cast<std::size_t>(k0 + r) * a.ld_qkv + c * 8;
    cp_async16(sK + sw128(BC, r, c * 8), ok ? K + off : K, ok);
    cp_async16(sV + sw128(BC, r, c * 8), ok ? V + off : V, ok);
  }
  auto load_q = [&](int buf, int qb) {
    const int q0 = qb * BR;
    const uint32_t dq = sQ0 + buf * BR * D * 2, dd = sO0 + buf * BR * D * 2;
    for (int i = tid; i < BR * CH; i += 256) {
      const int r = i / CH, c = i % CH;
      const bool ok = q0 + r < L;
      cp_async16(dq + sw128(BR, r, c * 8), ok ? Q + static_cast<std::size_t>(q0 + r) * a.ld_qkv + c * 8 : Q,
                 ok);
      cp_async16(dd + sw128(BR, r, c * 8),
                 ok ? dO + static_cast<std::size_t>(q0 + r) * a.ld_dout + c * 8 : dO, ok);
    }
    if (tid < BR) {
      const bool ok = q0 + tid < L;
      sL[buf * BR + tid] = ok ? lse[q0 + tid] * log2e : 0.f;
      sD[buf * BR + tid] = ok ? delta[q0 + tid] : 0.f;
    }
  };
  const int qb_first = k0 / BR;
  const int n_qb = (L + BR - 1) / BR;
  load_q(0, qb_first);
  cp_async_commit();

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) {
    dk[i] = 0.f;
    dv[i] = 0.f;
  }
  const int key_lo = k0 + wg * 64 + warp * 16 + (lane >> 2);
  float* dq_base = a.dq_acc + tok0 * (static_cast<std::size_t>(a.heads) * D) + h * D;
  const std::size_t dq_ld = static_cast<std::size_t>(a.heads) * D;
  const int dq_col0 = D == 128 ? wg * 64 : 0;

  // dQ of query tile `qt` (its dS^T in buffer sbuf): D = 128: this warpgroup's 64 head_dim columns over
  // all keys; D = 64: all columns over this warpgroup's 64 keys.
  auto dq_issue = [&](uint32_t sS, float(&acc)[32]) {
    constexpr int ksteps = D == 128 ? BC / 16 : BC / 32;
#pragma unroll
    for (int i = 0; i < ksteps; ++i) {
      const int kk = D == 128 ? i : wg * (BC / 32) + i;
      const uint32_t boff = (D == 128 ? wg * BC * 128 : 0) + kk * 2048;
      wgmma_m64n64k16<1, 1>(acc, make_desc(sS + kk * 2048, 8192, 1024), make_desc(sK + boff, BC * 128, 1024),
                            i > 0 ? 1 : 0);
    }
  };
  auto dq_flush = [&](int qt, const float(&acc)[32]) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = qt * BR + warp * 16 + (lane >> 2) + hi * 8;
      if (row >= L) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        red_add_v2(dq_base + static_cast<std::size_t>(row) * dq_ld + dq_col0 + j * 8 + 2 * (lane & 3),
                   acc[4 * j + 2 * hi], acc[4 * j + 2 * hi + 1]);
    }
  };

  for (int qb = qb_first; qb < n_qb; ++qb) {
    const int buf = (qb - qb_first) & 1;
    if (qb + 1 < n_qb) load_q(buf ^ 1, qb + 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
    const int q0 = qb * BR;
    const uint32_t sQ = sQ0 + buf * BR * D * 2, sO = sO0 + buf * BR * D * 2;
    const float* lrow = sL + buf * BR;
    const float* drow = sD + buf * BR;
    const bool have_prev = qb > qb_first;

    float st[32], dp[32], dqa[32];
    if (have_prev) {
      wgmma_fence();
      dq_issue(sS0 + (buf ^ 1) * BC * BR * 2, dqa);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(st, make_desc(sK + koff, 16, 1024), make_desc(sQ + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * BC * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t qoff = (kk >> 2) * BR * 128 + (kk & 3) * 32;
      wgmma_m64n64k16<0, 0>(dp, make_desc(sV + koff, 16, 1024), make_desc(sO + qoff, 16, 1024),
                            kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    // (Reading dqa after wgmma_wait<1> while S^T / dP^T are still in flight makes ptxas serialise every
    // wgmma of the kernel, C7514: wait for both groups; the products still run back to back.)
    wgmma_wait<0>();
    keep(st);
    keep(dp);
    if (have_prev) {
      keep(dqa);
      dq_flush(qb - 1, dqa);
    }

    uint32_t pa[4][4], sa[4][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_lo + ((e >> 1) << 3);
        const int ql = j * 8 + 2 * (lane & 3) + (e & 1);
        const int qg = q0 + ql;
        float p = 0.f;
        if (key <= qg && qg < L) p = exp2f(st[4 * j + e] * a.scale_log2 - lrow[ql]);
        st[4 * j + e] = p;
        dp[4 * j + e] = p * (dp[4 * j + e] - drow[ql]);
      }
    }
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        pa[kq][r] = pack_bf16(st[8 * kq + 2 * r], st[8 * kq + 2 * r + 1]);
        sa[kq][r] = pack_bf16(dp[8 * kq + 2 * r], dp[8 * kq + 2 * r + 1]);
      }
    }
    wgmma_fence();
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dv, pa[kq], make_desc(sO + kq * 2048, BR * 128, 1024));
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) wgmma_rs_d<D>(dk, sa[kq], make_desc(sQ + kq * 2048, BR * 128, 1024));
    wgmma_commit();
    unsigned char* pS = pS0 + buf * BC * BR * 2;
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int key = wg * 64 + warp * 16 + (lane >> 2) + ((r & 1) << 3);
        const int col = kq * 16 + ((r >> 1) << 3) + 2 * (lane & 3);
        *reinterpret_cast<uint32_t*>(pS + sw128(BC, key, col)) = sa[kq][r];
      }
    }
    wgmma_wait<0>();
    keep(dv);
    keep(dk);
    keep(pa);
    keep(sa);
  }
  {
    // dQ of the last query tile.
    fence_proxy_async();
    __syncthreads();
    float dqa[32];
    wgmma_fence();
    dq_issue(sS0 + ((n_qb - 1 - qb_first) & 1) * BC * BR * 2, dqa);
    wgmma_commit();
    wgmma_wait<0>();
    keep(dqa);
    dq_flush(n_qb - 1, dqa);
  }

  bf16* dK = a.dk + tok0 * a.ld_dqkv + h * D;
  bf16* dV = a.dv + tok0 * a.ld_dqkv + h * D;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int key = key_lo + hi * 8;
    if (key >= L) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + 2 * (lane & 3);
      *reinterpret_cast<uint32_t*>(dK + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dk[4 * j + 2 * hi] * a.scale, dk[4 * j + 2 * hi + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dV + static_cast<std::size_t>(key) * a.ld_dqkv + col) =
          pack_bf16(dv[4 * j + 2 * hi], dv[4 * j + 2 * hi + 1]);
    }
  }
}

// dq = bf16(scale * dq_acc), 8 values a thread.
__global__ void attention_dq_kernel(const float* __restrict__ acc, bf16* __restrict__ dq, int ld_dqkv,
                                    int tokens, int width, float scale) {
  const long long per_row = width / 8;
  const long long items = static_cast<long long>(tokens) * per_row;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long t = i / per_row;
    const int c = static_cast<int>(i % per_row) * 8;
    const float4 x = *reinterpret_cast<const float4*>(acc + t * width + c);
    const float4 y = *reinterpret_cast<const float4*>(acc + t * width + c + 4);
    const float f[8] = {x.x * scale, x.y * scale, x.z * scale, x.w * scale,
                        y.x * scale, y.y * scale, y.z * scale, y.w * scale};
    *reinterpret_cast<bf16x8*>(dq + t * ld_dqkv + c) = pack8(f);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

expected<void> check_shape(const attention_shape& s, const char* what) {
  if (s.seqs < 0 || s.seq_len < 0 || s.heads <= 0) return invalid(std::string(what) + ": bad shape");
  if (s.head_dim != 64 && s.head_dim != 128)
    return invalid(std::string(what) + ": head_dim must be 64 or 128");
  return {};
}

template <class Kernel>
expected<void> launch_attention(Kernel kernel, dim3 grid, int threads, int smem, cudaStream_t stream,
                                const char* what, const auto& args) {
  if (auto e = check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), what);
      !e)
    return e;
  kernel<<<grid, threads, smem, stream>>>(args);
  return launched(what);
}

}  // namespace

expected<void> attention_forward(const attention_shape& shape, const bf16* q, const bf16* k, const bf16* v,
                                 int ld_qkv, bf16* out, int ld_out, float* lse, cudaStream_t stream,
                                 attention_impl impl) {
  if (auto e = check_shape(shape, "attention_forward"); !e) return e;
  if (ld_qkv % 8 != 0 || ld_out % 8 != 0 || !aligned16(q) || !aligned16(k) || !aligned16(v) ||
      !aligned16(out))
    return invalid("attention_forward: strides must be multiples of 8 elements and bases 16-byte aligned");
  if (shape.seqs == 0 || shape.seq_len == 0) return {};
  const fwd_args a{q, k, v, out, lse, ld_qkv, ld_out, shape.seq_len, shape.heads, shape.scale * log2e};
  if (impl == attention_impl::automatic) impl = attention_impl::wgmma;  // fastest forward for both head dims
  if (impl == attention_impl::wgmma || impl == attention_impl::wgmma_split) {
    const dim3 grid((shape.seq_len + wfwd_br - 1) / wfwd_br, shape.heads, shape.seqs);
    const std::uint64_t width = static_cast<std::uint64_t>(shape.heads) * shape.head_dim;
    const std::uint64_t tokens = static_cast<std::uint64_t>(shape.seqs) * shape.seq_len;
    auto tq = dev::make_tensor_map(q, width, tokens, ld_qkv, 64, wfwd_br);
    if (!tq) return forward_error(tq);
    auto tk = dev::make_tensor_map(k, width, tokens, ld_qkv, 64, wfwd_bc);
    if (!tk) return forward_error(tk);
    auto tv = dev::make_tensor_map(v, width, tokens, ld_qkv, 64, wfwd_bc);
    if (!tv) return forward_error(tv);
    auto launch = [&](auto kernel, int smem) -> expected<void> {
      if (auto e = check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                         "cudaFuncSetAttribute(attention_forward_pingpong_kernel)");
          !e)
        return e;
      kernel<<<grid, 256, smem, stream>>>(*tq, *tk, *tv, a);
      return launched("attention_forward_pingpong_kernel");
    };
    if (shape.head_dim == 64) return launch(attention_forward_pingpong_kernel<64>, pfwd_smem_bytes<64>());
    return launch(attention_forward_pingpong_kernel<128>, pfwd_smem_bytes<128>());
  }
  if (impl == attention_impl::wgmma_basic) {
    const dim3 grid((shape.seq_len + wfwd_br - 1) / wfwd_br, shape.heads, shape.seqs);
    if (shape.head_dim == 64)
      return launch_attention(attention_forward_wgmma_kernel<64>, grid, 256, wfwd_smem_bytes<64>(), stream,
                              "attention_forward_wgmma_kernel", a);
    return launch_attention(attention_forward_wgmma_kernel<128>, grid, 256, wfwd_smem_bytes<128>(), stream,
                            "attention_forward_wgmma_kernel", a);
  }
  const dim3 grid((shape.seq_len + fwd_br - 1) / fwd_br, shape.heads, shape.seqs);
  if (shape.head_dim == 64)
    return launch_attention(attention_forward_kernel<64>, grid, fwd_warps * 32, fwd_smem_bytes<64>(), stream,
                            "attention_forward_kernel", a);
  return launch_attention(attention_forward_kernel<128>, grid, fwd_warps * 32, fwd_smem_bytes<128>(), stream,
                          "attention_forward_kernel", a);
}

namespace {

// The backward that impl names: automatic picks the fastest measured one (the split, for both head dims).
attention_impl resolved_backward(attention_impl impl) {
  return impl == attention_impl::automatic ? attention_impl::wgmma_split : impl;
}

// Workspace layout: delta (fp32 per row and head), then, padded to 256 bytes, the fp32 dQ accumulator
// that every backward but the split one needs.
std::size_t delta_bytes(const attention_shape& s) {
  const std::size_t tokens = static_cast<std::size_t>(s.seqs) * static_cast<std::size_t>(s.seq_len);
  return tokens * static_cast<std::size_t>(s.heads) * sizeof(float);
}

std::size_t dq_accumulator_bytes(const attention_shape& s) {
  return delta_bytes(s) * static_cast<std::size_t>(s.head_dim);
}

}  // namespace

std::size_t attention_backward_workspace_bytes(const attention_shape& s, attention_impl impl) {
  if (resolved_backward(impl) == attention_impl::wgmma_split) return delta_bytes(s);
  return ((delta_bytes(s) + 255) / 256) * 256 + dq_accumulator_bytes(s);
}

expected<void> attention_backward(const attention_shape& shape, const bf16* q, const bf16* k, const bf16* v,
                                  int ld_qkv, const bf16* out, int ld_out, const bf16* dout, int ld_dout,
                                  const float* lse, bf16* dq, bf16* dk, bf16* dv, int ld_dqkv,
                                  void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                                  attention_impl impl) {
  if (auto e = check_shape(shape, "attention_backward"); !e) return e;
  if (ld_qkv % 8 != 0 || ld_out % 8 != 0 || ld_dout % 8 != 0 || ld_dqkv % 8 != 0 || !aligned16(q) ||
      !aligned16(k) || !aligned16(v) || !aligned16(out) || !aligned16(dout) || !aligned16(dq) ||
      !aligned16(dk) || !aligned16(dv))
    return invalid("attention_backward: strides must be multiples of 8 elements and bases 16-byte aligned");
  impl = resolved_backward(impl);
  if (workspace_bytes < attention_backward_workspace_bytes(shape, impl))
    return invalid("attention_backward: workspace too small (see attention_backward_workspace_bytes)");
  if (shape.seqs == 0 || shape.seq_len == 0) return {};
  const int D = shape.head_dim;
  const int tokens = shape.seqs * shape.seq_len;
  const bool split = impl == attention_impl::wgmma_split;  // dQ in a kernel of its own: no accumulator
  float* delta = static_cast<float*>(workspace);
  float* dq_acc = split ? nullptr
                        : reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) +
                                                   ((delta_bytes(shape) + 255) / 256) * 256);
  if (!split) {
    if (auto e = check(cudaMemsetAsync(dq_acc, 0, dq_accumulator_bytes(shape), stream),
                       "cudaMemsetAsync(dq accumulator)");
        !e)
      return e;
  }
  {
    const long long items = static_cast<long long>(tokens) * shape.heads;
    const int blocks = static_cast<int>((items + 7) / 8);
    if (D == 64) {
      attention_delta_kernel<64>
          <<<blocks, 256, 0, stream>>>(out, ld_out, dout, ld_dout, delta, tokens, shape.seq_len, shape.heads);
    } else {
      attention_delta_kernel<128>
          <<<blocks, 256, 0, stream>>>(out, ld_out, dout, ld_dout, delta, tokens, shape.seq_len, shape.heads);
    }
    if (auto e = launched("attention_delta_kernel"); !e) return e;
  }
  const bwd_args a{
      q,  k,      v,       dout,    lse,           delta,       dq_acc,      dk,
      dv, ld_qkv, ld_dout, ld_dqkv, shape.seq_len, shape.heads, shape.scale, shape.scale * log2e};
  auto main_pass = [&]() -> expected<void> {
    if (split) {
      const dim3 grid_kv((shape.seq_len + wbwd_bc - 1) / wbwd_bc, shape.heads, shape.seqs);
      const dim3 grid_q((shape.seq_len + wdq_br - 1) / wdq_br, shape.heads, shape.seqs);
      const std::uint64_t width = static_cast<std::uint64_t>(shape.heads) * D;
      const std::uint64_t rows = static_cast<std::uint64_t>(tokens);
      auto tq = dev::make_tensor_map(q, width, rows, ld_qkv, 64, wdq_br);
      if (!tq) return forward_error(tq);
      auto tdo = dev::make_tensor_map(dout, width, rows, ld_dout, 64, wdq_br);
      if (!tdo) return forward_error(tdo);
      auto tk = dev::make_tensor_map(k, width, rows, ld_qkv, 64, wdq_bc);
      if (!tk) return forward_error(tk);
      auto tv = dev::make_tensor_map(v, width, rows, ld_qkv, 64, wdq_bc);
      if (!tv) return forward_error(tv);
      auto tq64 = dev::make_tensor_map(q, width, rows, ld_qkv, 64, wbwd_br);
      if (!tq64) return forward_error(tq64);
      auto tdo64 = dev::make_tensor_map(dout, width, rows, ld_dout, 64, wbwd_br);
      if (!tdo64) return forward_error(tdo64);
      auto run = [&](auto kv_kernel, int kv_smem, auto dq_kernel, int dq_smem) -> expected<void> {
        if (auto e =
                check(cudaFuncSetAttribute(kv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kv_smem),
                      "cudaFuncSetAttribute(attention_backward_dkdv_pingpong_kernel)");
            !e)
          return e;
        kv_kernel<<<grid_kv, 256, kv_smem, stream>>>(*tq64, *tdo64, *tk, *tv, a);
        if (auto e = launched("attention_backward_dkdv_pingpong_kernel"); !e) return e;
        if (auto e =
                check(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dq_smem),
                      "cudaFuncSetAttribute(attention_backward_dq_pingpong_kernel)");
            !e)
          return e;
        dq_kernel<<<grid_q, 256, dq_smem, stream>>>(*tq, *tdo, *tk, *tv, a, dq);
        return launched("attention_backward_dq_pingpong_kernel");
      };
      if (D == 64)
        return run(attention_backward_dkdv_pingpong_kernel<64>, pkv_smem_bytes<64>(),
                   attention_backward_dq_pingpong_kernel<64>, pdq_smem_bytes<64>());
      return run(attention_backward_dkdv_pingpong_kernel<128>, pkv_smem_bytes<128>(),
                 attention_backward_dq_pingpong_kernel<128>, pdq_smem_bytes<128>());
    }
    if (impl == attention_impl::wgmma) {
      const dim3 grid((shape.seq_len + wbwd_bc - 1) / wbwd_bc, shape.heads, shape.seqs);
      if (D == 64)
        return launch_attention(attention_backward_pipelined_kernel<64>, grid, 256, pbwd_smem_bytes<64>(),
                                stream, "attention_backward_pipelined_kernel", a);
      return launch_attention(attention_backward_pipelined_kernel<128>, grid, 256, pbwd_smem_bytes<128>(),
                              stream, "attention_backward_pipelined_kernel", a);
    }
    if (impl == attention_impl::wgmma_basic) {
      const dim3 grid((shape.seq_len + wbwd_bc - 1) / wbwd_bc, shape.heads, shape.seqs);
      if (D == 64)
        return launch_attention(attention_backward_wgmma_kernel<64>, grid, 256, wbwd_smem_bytes<64>(), stream,
                                "attention_backward_wgmma_kernel", a);
      return launch_attention(attention_backward_wgmma_kernel<128>, grid, 256, wbwd_smem_bytes<128>(), stream,
                              "attention_backward_wgmma_kernel", a);
    }
    const dim3 grid((shape.seq_len + bwd_bc - 1) / bwd_bc, shape.heads, shape.seqs);
    if (D == 64)
      return launch_attention(attention_backward_kernel<64>, grid, bwd_warps * 32, bwd_smem_bytes<64>(),
                              stream, "attention_backward_kernel", a);
    return launch_attention(attention_backward_kernel<128>, grid, bwd_warps * 32, bwd_smem_bytes<128>(),
                            stream, "attention_backward_kernel", a);
  };
  if (auto e = main_pass(); !e) return e;
  if (split) return {};
  const int width = shape.heads * D;
  const long long items = static_cast<long long>(tokens) * (width / 8);
  const int blocks = static_cast<int>(std::min<long long>((items + 255) / 256, 65536));
  attention_dq_kernel<<<blocks, 256, 0, stream>>>(dq_acc, dq, ld_dqkv, tokens, width, shape.scale);
  return launched("attention_dq_kernel");
}

}  // namespace loom::cuda
