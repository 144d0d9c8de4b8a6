// Grouped GEMMs over experts with device-resident row counts (see grouped_gemm.hpp).
//
// Tile bookkeeping. M-grouped (grouped_gemm): group g owns ceil(rows_g / BM) row tiles; every CTA
// computes the prefix tile_start[] from the device offsets into shared memory and finds a tile's group by
// binary search, so the host only needs an upper bound of the tile count. K-grouped (wgrad): every group
// has the same ceil(m / BM) x ceil(n / BN) tiles and its k loop runs over the group's rows; the rows of the
// last k block beyond the group are zeroed in shared memory before the MMA.
#include <cublas_v2.h>
#include <cuda.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/cublas_api.hpp"
#include "kernels/cuda/grouped_gemm.hpp"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/tensor_map.cuh"

namespace loom::cuda {

namespace {

using namespace dev;
using dev::make_tensor_map;

constexpr int max_groups = 1024;

struct grouped_args {
  const int* offsets;
  int groups;
  int rows;  // rows of A / C (M-grouped) or of A and B (K-grouped)
  int m;     // K-grouped: rows of C_g
  int n;
  int k;  // M-grouped: the reduction length
  void* c;
};

// tile_start[0] = 0, tile_start[g + 1] = tile_start[g] + ceil(rows_g / bm). Run by one full warp.
__device__ __forceinline__ void m_tile_prefix(const int* offsets, int groups, int bm, int* tile_start) {
  const int lane = threadIdx.x & 31;
  int carry = 0;
  if (lane == 0) tile_start[0] = 0;
  for (int g0 = 0; g0 < groups; g0 += 32) {
    const int g = g0 + lane;
    int t = 0;
    if (g < groups) t = max(0, (offsets[g + 1] - offsets[g] + bm - 1) / bm);
    int incl = t;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (g < groups) tile_start[g + 1] = carry + incl;
    carry += __shfl_sync(0xffffffffu, incl, 31);
  }
}

// The group whose tiles hold row tile mt: tile_start[g] <= mt < tile_start[g + 1].
__device__ __forceinline__ int group_of_tile(const int* tile_start, int groups, int mt) {
  int lo = 0, hi = groups;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (tile_start[mid] <= mt)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// ------------------------------------------------------------------------------------------------
// wgmma + TMA implementation
// ------------------------------------------------------------------------------------------------

namespace wg {

constexpr int bm = 128, bk = 64, threads = 288;  // two consumer warpgroups + one producer warp
constexpr int box_bytes = 64 * 128;              // one 64 x 64 bf16 box, 128-byte rows

// 128 x 256 tiles (128 x 128 for narrow products), 4 stages, one CTA per SM. (Tried and dropped: 128 x 128
// tiles with 3 stages and two CTAs per SM ran 15-25% slower on both benchmark shapes.)
template <int BN, int STAGES>
struct shape {
  static constexpr int a_bytes = bm * bk * 2;
  static constexpr int b_bytes = BN * bk * 2;
  static constexpr int stage_bytes = a_bytes + b_bytes;
  static constexpr int smem_bytes = 1024 + STAGES * stage_bytes + 2 * STAGES * 8 + (max_groups + 1) * 4;
};

template <int BN, int TA, int TB>
__device__ __forceinline__ void mma_tile(float (&acc)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
  if constexpr (BN == 256) {
    wgmma_m64n256k16<TA, TB>(acc, da, db, scale_d);
  } else {
    wgmma_m64n128k16<TA, TB>(acc, da, db, scale_d);
  }
}

struct tile_info {
  int g, row0, row_end, m0, n0, kblocks;
};

template <int BN, bool KG>
__device__ __forceinline__ tile_info decode(const grouped_args& p, const int* tile_start, int t) {
  tile_info ti{};
  const int n_tiles = (p.n + BN - 1) / BN;
  if constexpr (KG) {
    const int m_tiles = (p.m + bm - 1) / bm;
    const int per_group = m_tiles * n_tiles;
    ti.g = t / per_group;
    const int r = t - ti.g * per_group;
    ti.m0 = (r / n_tiles) * bm;
    ti.n0 = (r % n_tiles) * BN;
    ti.row0 = p.offsets[ti.g];
    ti.row_end = p.offsets[ti.g + 1];
    ti.kblocks = max(0, (ti.row_end - ti.row0 + bk - 1) / bk);
  } else {
    ti.n0 = (t % n_tiles) * BN;
    const int mt = t / n_tiles;
    ti.g = group_of_tile(tile_start, p.groups, mt);
    ti.row0 = p.offsets[ti.g] + (mt - tile_start[ti.g]) * bm;
    ti.row_end = p.offsets[ti.g + 1];
    ti.m0 = 0;
    ti.kblocks = (p.k + bk - 1) / bk;
  }
  return ti;
}

// A_MN / B_MN: the operand is M-/N-major in shared memory (A: K-grouped x^T; B: row-major weights [k, n]).
// MINB CTAs per SM. Warps 0-7 are the two consumer warpgroups, warp 8 the producer (a whole producer
// warpgroup with setmaxnreg would not help: ptxas sizes every thread for the kernel's register cap).
template <int BN, int STAGES, int MINB, bool KG, bool A_MN, bool B_MN>
__global__ void __launch_bounds__(threads, MINB)
    grouped_kernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                   const grouped_args p) {
  using S = shape<BN, STAGES>;
  constexpr int stages = STAGES;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) &
                                                         ~std::uintptr_t{1023});
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + stages * S::stage_bytes);
  uint64_t* empty = full + stages;
  int* tile_start = reinterpret_cast<int*>(empty + stages);

  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 8);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (!KG) {
    if (threadIdx.x < 32) m_tile_prefix(p.offsets, p.groups, bm, tile_start);
  }
  __syncthreads();

  const int n_tiles = (p.n + BN - 1) / BN;
  int total;
  if constexpr (KG) {
    total = p.groups * ((p.m + bm - 1) / bm) * n_tiles;
  } else {
    total = tile_start[p.groups] * n_tiles;
  }
  if (threadIdx.x >= 256) {
    // Producer warp: one thread issues every TMA load.
    if (threadIdx.x == 256) {
      int stage = 0;
      uint32_t phase = 0;
      for (int t = blockIdx.x; t < total; t += gridDim.x) {
        const tile_info ti = decode<BN, KG>(p, tile_start, t);
        for (int kb = 0; kb < ti.kblocks; ++kb) {
          mbar_wait(&empty[stage], phase ^ 1);
          unsigned char* sa = smem + stage * S::stage_bytes;
          unsigned char* sb = sa + S::a_bytes;
          mbar_expect_tx(&full[stage], S::stage_bytes);
          if constexpr (!KG) {
            tma_load_2d(sa, &tma_a, &full[stage], kb * bk, ti.row0);
            if constexpr (B_MN) {
#pragma unroll
              for (int j = 0; j < BN / 64; ++j)
                tma_load_2d(sb + j * box_bytes, &tma_b, &full[stage], ti.n0 + 64 * j, ti.g * p.k + kb * bk);
            } else {
              tma_load_2d(sb, &tma_b, &full[stage], kb * bk, ti.g * p.n + ti.n0);
            }
          } else {
            const int r = ti.row0 + kb * bk;
            tma_load_2d(sa, &tma_a, &full[stage], ti.m0, r);
            tma_load_2d(sa + box_bytes, &tma_a, &full[stage], ti.m0 + 64, r);
#pragma unroll
            for (int j = 0; j < BN / 64; ++j)
              tma_load_2d(sb + j * box_bytes, &tma_b, &full[stage], ti.n0 + 64 * j, r);
          }
          if (++stage == stages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    const int c = threadIdx.x / 128;  // this warpgroup's 64-row half of the tile
    [[maybe_unused]] const int tid = threadIdx.x;
    const int warp = (threadIdx.x & 127) >> 5, lane = threadIdx.x & 31;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    int stage = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x) {
      const tile_info ti = decode<BN, KG>(p, tile_start, t);
      if (ti.kblocks == 0) continue;
      if (!KG && ti.row0 + c * 64 >= ti.row_end) {
        // This half of the tile is past the group's last row: release the stages without MMAs, so the
        // other warpgroup has the tensor cores to itself.
        for (int kb = 0; kb < ti.kblocks; ++kb) {
          mbar_wait(&full[stage], phase);
          if (lane == 0) mbar_arrive(&empty[stage]);
          if (++stage == stages) {
            stage = 0;
            phase ^= 1;
          }
        }
        continue;
      }
      int prev = -1;
      for (int kb = 0; kb < ti.kblocks; ++kb) {
        mbar_wait(&full[stage], phase);
        unsigned char* sa = smem + stage * S::stage_bytes;
        unsigned char* sb = sa + S::a_bytes;
        if constexpr (KG) {
          const int valid = ti.row_end - (ti.row0 + kb * bk);
          if (valid < bk) {
            // Rows past the group's end belong to the next group: zero them in every box of the stage.
            const int nrows = bk - valid;
            constexpr int nbox = 2 + BN / 64;
            const int items = nbox * nrows * 8;
            for (int i = tid; i < items; i += 256) {
              const int box = i / (nrows * 8), rem = i - box * (nrows * 8);
              const int row = valid + (rem >> 3), ch = rem & 7;
              unsigned char* base = box < 2 ? sa + box * box_bytes : sb + (box - 2) * box_bytes;
              *reinterpret_cast<uint4*>(base + row * 128 + ch * 16) = make_uint4(0, 0, 0, 0);
            }
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
            asm volatile("bar.sync 1, 256;\n" ::: "memory");
          }
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          uint64_t da, db;
          if constexpr (A_MN) {
            da = make_desc(smem_u32(sa) + c * box_bytes + kk * 2048, 8192, 1024);
          } else {
            da = make_desc(smem_u32(sa) + c * (64 * 128) + kk * 32, 16, 1024);
          }
          if constexpr (B_MN) {
            db = make_desc(smem_u32(sb) + kk * 2048, 8192, 1024);
          } else {
            db = make_desc(smem_u32(sb) + kk * 32, 16, 1024);
          }
          mma_tile<BN, A_MN ? 1 : 0, B_MN ? 1 : 0>(acc, da, db, (kb > 0 || kk > 0) ? 1 : 0);
        }
        wgmma_commit();
        if (prev >= 0) {
          wgmma_wait<1>();
          if (lane == 0) mbar_arrive(&empty[prev]);
        }
        prev = stage;
        if (++stage == stages) {
          stage = 0;
          phase ^= 1;
        }
      }
      wgmma_wait<0>();
      if (lane == 0) mbar_arrive(&empty[prev]);

      // Epilogue: accumulator (row 16 warp + lane / 4 (+8), cols 8 j + 2 (lane % 4) + {0, 1}).
      if constexpr (!KG) {
        bf16* C = static_cast<bf16*>(p.c);
        const int r0 = ti.row0 + c * 64 + warp * 16 + (lane >> 2);
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
          const int col = ti.n0 + j * 8 + (lane & 3) * 2;
          if (col < p.n) {
            if (r0 < ti.row_end)
              *reinterpret_cast<uint32_t*>(C + static_cast<std::size_t>(r0) * p.n + col) =
                  pack_bf16(acc[4 * j], acc[4 * j + 1]);
            if (r0 + 8 < ti.row_end)
              *reinterpret_cast<uint32_t*>(C + static_cast<std::size_t>(r0 + 8) * p.n + col) =
                  pack_bf16(acc[4 * j + 2], acc[4 * j + 3]);
          }
        }
      } else {
        // Reductions, not load-add-store: with ~6 k blocks a tile (64 experts of ~384 rows) a store
        // epilogue that waits for each old value took most of the kernel's time.
        float* C = static_cast<float*>(p.c) + static_cast<std::size_t>(ti.g) * p.m * p.n;
        const int r0 = ti.m0 + c * 64 + warp * 16;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) red_add_fragment(C, p.n, p.m, p.n, r0, ti.n0 + j * 8, &acc[4 * j]);
      }
    }
  }
}

}  // namespace wg

// ------------------------------------------------------------------------------------------------
// mma.sync implementation (cp.async pipeline)
// ------------------------------------------------------------------------------------------------

namespace ms {

constexpr int bm = 128, bn = 128, bk = 32, stages = 4, threads = 256;
constexpr int tile_bytes = 128 * 32 * 2;  // either operand's tile: 8 KB
constexpr int smem_bytes = stages * 2 * tile_bytes + (max_groups + 1) * 4;

// K-major tiles are [128 rows][32 k] (4 chunks a row); M/N-major tiles are [32 k][128] (16 chunks a row).
template <bool KG, bool A_MN, bool B_MN>
__global__ void __launch_bounds__(threads)
    grouped_kernel(const bf16* __restrict__ A, const bf16* __restrict__ B, const grouped_args p) {
  extern __shared__ __align__(128) unsigned char smem[];
  int* tile_start = reinterpret_cast<int*>(smem + stages * 2 * tile_bytes);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp & 1, wn = warp >> 1;

  int g, row0, row_end, n0, kblocks;
  [[maybe_unused]] int m0 = 0;
  if constexpr (KG) {
    g = blockIdx.z;
    m0 = blockIdx.x * bm;
    n0 = blockIdx.y * bn;
    row0 = p.offsets[g];
    row_end = p.offsets[g + 1];
    kblocks = max(0, (row_end - row0 + bk - 1) / bk);
    if (kblocks == 0) return;
  } else {
    if (warp == 0) m_tile_prefix(p.offsets, p.groups, bm, tile_start);
    __syncthreads();
    const int mt = blockIdx.x;
    if (mt >= tile_start[p.groups]) return;
    g = group_of_tile(tile_start, p.groups, mt);
    row0 = p.offsets[g] + (mt - tile_start[g]) * bm;
    row_end = p.offsets[g + 1];
    n0 = blockIdx.y * bn;
    kblocks = (p.k + bk - 1) / bk;
  }
  const bf16* Bg = B;
  if constexpr (!KG) Bg = B + static_cast<std::size_t>(g) * p.k * p.n;

  auto load_stage = [&](int slot, int kb) {
    const uint32_t sa = smem_u32(smem + slot * 2 * tile_bytes);
    const uint32_t sb = sa + tile_bytes;
    const int k0 = kb * bk;
#pragma unroll
    for (int it = 0; it < 2; ++it) {
      const int idx = tid + it * threads;
      // A
      if constexpr (!A_MN) {  // [rows, k]: tile rows row0.., k cols k0..
        const int r = idx >> 2, ch = idx & 3;
        const int gr = row0 + r, gk = k0 + ch * 8;
        const bool ok = gr < row_end && gk < p.k;
        cp_async16(sa + swz<4>(r, ch), ok ? A + static_cast<std::size_t>(gr) * p.k + gk : A, ok);
      } else {  // K-grouped: x [rows, m]; tile k rows (x rows) r0.., m cols m0..
        const int r = idx >> 4, ch = idx & 15;
        const int gr = row0 + k0 + r, gm = m0 + ch * 8;
        const bool ok = gr < row_end && gm < p.m;
        cp_async16(sa + swz<16>(r, ch), ok ? A + static_cast<std::size_t>(gr) * p.m + gm : A, ok);
      }
      // B
      if constexpr (KG) {  // dy [rows, n]: k rows r0.., n cols n0..
        const int r = idx >> 4, ch = idx & 15;
        const int gr = row0 + k0 + r, gn = n0 + ch * 8;
        const bool ok = gr < row_end && gn < p.n;
        cp_async16(sb + swz<16>(r, ch), ok ? Bg + static_cast<std::size_t>(gr) * p.n + gn : Bg, ok);
      } else if constexpr (B_MN) {  // B_g [k, n]
        const int r = idx >> 4, ch = idx & 15;
        const int gk = k0 + r, gn = n0 + ch * 8;
        const bool ok = gk < p.k && gn < p.n;
        cp_async16(sb + swz<16>(r, ch), ok ? Bg + static_cast<std::size_t>(gk) * p.n + gn : Bg, ok);
      } else {  // B_g [n, k]
        const int r = idx >> 2, ch = idx & 3;
        const int gn = n0 + r, gk = k0 + ch * 8;
        const bool ok = gn < p.n && gk < p.k;
        cp_async16(sb + swz<4>(r, ch), ok ? Bg + static_cast<std::size_t>(gn) * p.k + gk : Bg, ok);
      }
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < stages - 1; ++s) {
    if (s < kblocks) load_stage(s, s);
    cp_async_commit();
  }
  for (int kb = 0; kb < kblocks; ++kb) {
    cp_async_wait<stages - 2>();
    __syncthreads();
    const int next = kb + stages - 1;
    if (next < kblocks) load_stage(next % stages, next);
    cp_async_commit();
    const int slot = kb % stages;
    const uint32_t sa = smem_u32(smem + slot * 2 * tile_bytes);
    const uint32_t sb = sa + tile_bytes;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        if constexpr (!A_MN) {
          const int row = wm * 64 + mi * 16 + (lane & 15);
          ldmatrix_x4(sa + swz<4>(row, ks * 2 + (lane >> 4)), a[mi][0], a[mi][1], a[mi][2], a[mi][3]);
        } else {
          const int krow = ks * 16 + (lane & 7) + 8 * (lane >> 4);
          const int mch = (wm * 64 + mi * 16) / 8 + ((lane >> 3) & 1);
          ldmatrix_x4_trans(sa + swz<16>(krow, mch), a[mi][0], a[mi][1], a[mi][2], a[mi][3]);
        }
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        if constexpr (KG || B_MN) {
          const int krow = ks * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
          const int nch = (wn * 32 + np * 16) / 8 + (lane >> 4);
          ldmatrix_x4_trans(sb + swz<16>(krow, nch), b[2 * np][0], b[2 * np][1], b[2 * np + 1][0],
                            b[2 * np + 1][1]);
        } else {
          const int nrow = wn * 32 + np * 16 + (lane & 7) + 8 * (lane >> 4);
          ldmatrix_x4(sb + swz<4>(nrow, ks * 2 + ((lane >> 3) & 1)), b[2 * np][0], b[2 * np][1],
                      b[2 * np + 1][0], b[2 * np + 1][1]);
        }
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
  }
  cp_async_wait<0>();

  if constexpr (!KG) {
    bf16* C = static_cast<bf16*>(p.c);
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
      const int r = row0 + wm * 64 + mi * 16 + (lane >> 2);
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int col = n0 + wn * 32 + ni * 8 + (lane & 3) * 2;
        if (col >= p.n) continue;
        if (r < row_end)
          *reinterpret_cast<uint32_t*>(C + static_cast<std::size_t>(r) * p.n + col) =
              pack_bf16(acc[mi][ni][0], acc[mi][ni][1]);
        if (r + 8 < row_end)
          *reinterpret_cast<uint32_t*>(C + static_cast<std::size_t>(r + 8) * p.n + col) =
              pack_bf16(acc[mi][ni][2], acc[mi][ni][3]);
      }
    }
  } else {
    float* C = static_cast<float*>(p.c) + static_cast<std::size_t>(g) * p.m * p.n;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
        red_add_fragment(C, p.n, p.m, p.n, m0 + wm * 64 + mi * 16, n0 + wn * 32 + ni * 8, acc[mi][ni]);
  }
}

}  // namespace ms

// ------------------------------------------------------------------------------------------------
// host side
// ------------------------------------------------------------------------------------------------

expected<int> sm_count() {
  int dev = 0, count = 0;
  if (auto e = check(cudaGetDevice(&dev), "cudaGetDevice"); !e) return forward_error(e);
  if (auto e = check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev),
                     "cudaDeviceGetAttribute");
      !e)
    return forward_error(e);
  return count;
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

template <int BN, int STAGES, int MINB, bool KG, bool A_MN, bool B_MN>
expected<void> launch_wgmma(const CUtensorMap& ta, const CUtensorMap& tb, const grouped_args& p,
                            int upper_tiles, int max_ctas, cudaStream_t stream) {
  auto kernel = wg::grouped_kernel<BN, STAGES, MINB, KG, A_MN, B_MN>;
  constexpr int smem = wg::shape<BN, STAGES>::smem_bytes;
  if (auto e = check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                     "cudaFuncSetAttribute(wgmma grouped GEMM)");
      !e)
    return e;
  auto sms = sm_count();
  if (!sms) return forward_error(sms);
  const int ctas = max_ctas > 0 ? max_ctas : *sms * MINB;
  const int grid = std::max(1, std::min(ctas, upper_tiles));
  kernel<<<grid, wg::threads, smem, stream>>>(ta, tb, p);
  return launched("wgmma grouped GEMM kernel");
}

// 128 x 256 tiles when the product is wider than 128 columns, else 128 x 128.
bool use_wide(int n) { return n > 128; }

template <bool KG, bool A_MN, bool B_MN>
expected<void> launch_mma(const bf16* a, const bf16* b, const grouped_args& p, dim3 grid,
                          cudaStream_t stream) {
  auto kernel = ms::grouped_kernel<KG, A_MN, B_MN>;
  if (auto e =
          check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, ms::smem_bytes),
                "cudaFuncSetAttribute(mma.sync grouped GEMM)");
      !e)
    return e;
  kernel<<<grid, ms::threads, ms::smem_bytes, stream>>>(a, b, p);
  return launched("mma.sync grouped GEMM kernel");
}

}  // namespace

expected<void> grouped_gemm(const bf16* a, const bf16* b, weight_layout layout, bf16* c, const int* offsets,
                            int groups, int rows, int n, int k, cudaStream_t stream, grouped_impl impl,
                            int max_ctas) {
  if (groups <= 0 || groups > max_groups) return invalid("grouped_gemm: need 0 < groups <= 1024");
  if (rows < 0 || n <= 0 || k <= 0 || n % 8 != 0 || k % 8 != 0)
    return invalid("grouped_gemm: n and k must be positive multiples of 8");
  if (!aligned16(a) || !aligned16(b) || !aligned16(c))
    return invalid("grouped_gemm: pointers must be 16-byte aligned");
  if (rows == 0) return {};
  const grouped_args p{offsets, groups, rows, 0, n, k, c};
  const bool kn = layout == weight_layout::kn;
  if (impl == grouped_impl::mma_sync) {
    const dim3 grid((rows + ms::bm - 1) / ms::bm + groups, (n + ms::bn - 1) / ms::bn);
    return kn ? launch_mma<false, false, true>(a, b, p, grid, stream)
              : launch_mma<false, false, false>(a, b, p, grid, stream);
  }
  const bool wide = use_wide(n);
  const int bn = wide ? 256 : 128;
  auto ta = make_tensor_map(a, k, rows, k, 64, wg::bm);
  if (!ta) return forward_error(ta);
  expected<CUtensorMap> tb = kn ? make_tensor_map(b, n, static_cast<std::uint64_t>(groups) * k, n, 64, 64)
                                : make_tensor_map(b, k, static_cast<std::uint64_t>(groups) * n, k, 64, bn);
  if (!tb) return forward_error(tb);
  const int upper = ((rows + wg::bm - 1) / wg::bm + groups) * ((n + bn - 1) / bn);
  if (wide) {
    return kn ? launch_wgmma<256, 4, 1, false, false, true>(*ta, *tb, p, upper, max_ctas, stream)
              : launch_wgmma<256, 4, 1, false, false, false>(*ta, *tb, p, upper, max_ctas, stream);
  }
  return kn ? launch_wgmma<128, 4, 1, false, false, true>(*ta, *tb, p, upper, max_ctas, stream)
            : launch_wgmma<128, 4, 1, false, false, false>(*ta, *tb, p, upper, max_ctas, stream);
}

expected<void> grouped_gemm_wgrad(const bf16* a, const bf16* b, float* c, const int* offsets, int groups,
                                  int rows, int m, int n, cudaStream_t stream, grouped_impl impl,
                                  int max_ctas) {
  if (groups <= 0 || groups > max_groups) return invalid("grouped_gemm_wgrad: need 0 < groups <= 1024");
  if (rows < 0 || m <= 0 || n <= 0 || m % 8 != 0 || n % 8 != 0)
    return invalid("grouped_gemm_wgrad: m and n must be positive multiples of 8");
  if (!aligned16(a) || !aligned16(b) || !aligned16(c))
    return invalid("grouped_gemm_wgrad: pointers must be 16-byte aligned");
  if (rows == 0) return {};
  const grouped_args p{offsets, groups, rows, m, n, 0, c};
  if (impl == grouped_impl::mma_sync) {
    const dim3 grid((m + ms::bm - 1) / ms::bm, (n + ms::bn - 1) / ms::bn, groups);
    return launch_mma<true, true, true>(a, b, p, grid, stream);
  }
  const bool wide = use_wide(n);
  const int bn = wide ? 256 : 128;
  auto ta = make_tensor_map(a, m, rows, m, 64, 64);
  if (!ta) return forward_error(ta);
  auto tb = make_tensor_map(b, n, rows, n, 64, 64);
  if (!tb) return forward_error(tb);
  const int upper = groups * ((m + wg::bm - 1) / wg::bm) * ((n + bn - 1) / bn);
  return wide ? launch_wgmma<256, 4, 1, true, true, true>(*ta, *tb, p, upper, max_ctas, stream)
              : launch_wgmma<128, 4, 1, true, true, true>(*ta, *tb, p, upper, max_ctas, stream);
}

expected<void> grouped_gemm_cublas(blas& handle, const bf16* a, const bf16* b, weight_layout layout, bf16* c,
                                   const int* host_offsets, int groups, int n, int k, void* scratch,
                                   cudaStream_t stream) {
  if (groups <= 0) return invalid("grouped_gemm_cublas: need groups > 0");
  // Column-major: C_g^T [n x rows_g] = op(B_g)^T [n x k] * A_g^T [k x rows_g].
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> ms, ns, ks, lda, ldb, ldc, sizes;
  std::vector<float> alpha, beta;
  std::vector<const void*> pa, pb;
  std::vector<void*> pc;
  for (int g = 0; g < groups; ++g) {
    const int r = host_offsets[g + 1] - host_offsets[g];
    if (r <= 0) continue;
    ta.push_back(layout == weight_layout::kn ? CUBLAS_OP_N : CUBLAS_OP_T);
    tb.push_back(CUBLAS_OP_N);
    ms.push_back(n);
    ns.push_back(r);
    ks.push_back(k);
    lda.push_back(layout == weight_layout::kn ? n : k);
    ldb.push_back(k);
    ldc.push_back(n);
    alpha.push_back(1.f);
    beta.push_back(0.f);
    sizes.push_back(1);
    pa.push_back(b + static_cast<std::size_t>(g) * k * n);
    pb.push_back(a + static_cast<std::size_t>(host_offsets[g]) * k);
    pc.push_back(c + static_cast<std::size_t>(host_offsets[g]) * n);
  }
  const int count = static_cast<int>(pa.size());
  if (count == 0) return {};
  void** dev = static_cast<void**>(scratch);
  if (auto e = check(cudaMemcpyAsync(dev, pa.data(), count * sizeof(void*), cudaMemcpyHostToDevice, stream),
                     "cudaMemcpyAsync");
      !e)
    return e;
  if (auto e = check(
          cudaMemcpyAsync(dev + count, pb.data(), count * sizeof(void*), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync");
      !e)
    return e;
  if (auto e = check(
          cudaMemcpyAsync(dev + 2 * count, pc.data(), count * sizeof(void*), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync");
      !e)
    return e;
  auto loaded = cublas();  // present: `handle` was made by blas::create
  if (!loaded) return forward_error(loaded);
  const cublas_api& api = **loaded;
  auto h = static_cast<cublasHandle_t>(handle.cublas_handle());
  cublasStatus_t s = api.set_stream(h, stream);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = api.gemm_grouped_batched_ex(h, ta.data(), tb.data(), ms.data(), ns.data(), ks.data(), alpha.data(),
                                   const_cast<const void* const*>(dev), CUDA_R_16BF, lda.data(),
                                   const_cast<const void* const*>(dev + count), CUDA_R_16BF, ldb.data(),
                                   beta.data(), dev + 2 * count, CUDA_R_16BF, ldc.data(), count, sizes.data(),
                                   CUBLAS_COMPUTE_32F);
  if (s != CUBLAS_STATUS_SUCCESS)
    return unexpected(errc::backend_error, std::string("cublasGemmGroupedBatchedEx failed: ") +
                                               api.status_name(s) + " (" + api.status_string(s) +
                                               ")");
  return {};  // cuBLAS reads the host arrays during the call; the pointer arrays were copied before it
}

}  // namespace loom::cuda
