// Route plan (stable counting sort) and the row movers of dispatch/combine (see permute.hpp).
//
// make_route_plan, in three launches:
//   1. count: one warp per chunk of 1024 copies walks them in order, 32 at a time; __match_any_sync groups
//      the lanes of one slot, so each copy learns its rank among the chunk's earlier copies of its slot;
//      the chunk's per-slot counts go to a [chunks, experts] table.
//   2. scan: per slot, an exclusive scan of the counts over chunks; then an exclusive scan over slots
//      gives offsets; each table entry becomes the chunk's first position for that slot.
//   3. scatter: position = table[chunk][slot] + rank.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/permute.hpp"

namespace loom::cuda {

namespace {

using namespace dev;

constexpr int chunk = 1024;
constexpr int max_experts = 12288;
constexpr int scan_threads = 1024;

int chunks_of(int n) { return (n + chunk - 1) / chunk; }

__global__ void plan_count_kernel(const int* __restrict__ idx, int n, int experts, int* __restrict__ counts,
                                  int* __restrict__ rank) {
  extern __shared__ int hist[];
  const int lane = threadIdx.x;
  for (int e = lane; e < experts; e += 32) hist[e] = 0;
  __syncwarp();
  const int begin = blockIdx.x * chunk;
  for (int step = 0; step < chunk; step += 32) {
    const int i = begin + step + lane;
    int e = i < n ? idx[i] : -1;
    if (e >= experts) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int leader = __ffs(peers) - 1;
    int base = 0;
    if (lane == leader && e >= 0) base = hist[e];
    base = __shfl_sync(0xffffffffu, base, leader);
    if (e >= 0) rank[i] = base + __popc(peers & ((1u << lane) - 1u));
    __syncwarp();
    if (lane == leader && e >= 0) hist[e] = base + __popc(peers);
    __syncwarp();
  }
  int* row = counts + static_cast<std::size_t>(blockIdx.x) * experts;
  for (int e = lane; e < experts; e += 32) row[e] = hist[e];
}

// One block. counts[c][e] -> offsets[e] + sum_{c' < c} counts[c'][e].
__global__ void plan_scan_kernel(int* __restrict__ counts, int chunks, int experts,
                                 int* __restrict__ offsets) {
  extern __shared__ int total[];  // [experts]
  __shared__ int warp_sums[32];
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    int run = 0;
    for (int c = 0; c < chunks; ++c) {
      int* p = counts + static_cast<std::size_t>(c) * experts + e;
      const int v = *p;
      *p = run;
      run += v;
    }
    total[e] = run;
  }
  __syncthreads();
  // Exclusive scan of total[0 .. experts): thread t owns a contiguous segment.
  const int per = (experts + blockDim.x - 1) / blockDim.x;
  const int lo = min(experts, static_cast<int>(threadIdx.x) * per), hi = min(experts, lo + per);
  int local = 0;
  for (int e = lo; e < hi; ++e) local += total[e];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = local;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = lane < static_cast<int>(blockDim.x >> 5) ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += v;
    }
    warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  int run = (warp > 0 ? warp_sums[warp - 1] : 0) + incl - local;
  for (int e = lo; e < hi; ++e) {
    const int t = total[e];
    total[e] = run;  // now the exclusive offset
    run += t;
  }
  if (threadIdx.x == blockDim.x - 1) offsets[experts] = run;
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += blockDim.x) offsets[e] = total[e];
  for (int c = 0; c < chunks; ++c)
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
      counts[static_cast<std::size_t>(c) * experts + e] += total[e];
}

__global__ void plan_scatter_kernel(const int* __restrict__ idx, int n, int k, int experts,
                                    const int* __restrict__ counts, const int* __restrict__ rank,
                                    int* __restrict__ token, int* __restrict__ slot,
                                    int* __restrict__ position) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int e = idx[i];
  if (e < 0 || e >= experts) {
    position[i] = -1;
    return;
  }
  const int pos = counts[static_cast<std::size_t>(i / chunk) * experts + e] + rank[i];
  token[pos] = i / k;
  slot[pos] = i % k;
  position[i] = pos;
}

bool vec_ok(int cols, const void* a, const void* b) {
  auto aligned = [](const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; };
  return cols % 8 == 0 && aligned(a) && aligned(b);
}

// Row movers run on few SMs when the grid is capped (a comm op's SM budget), so each block moves several
// rows at once (blockDim.y of them, blockDim.x threads over a row's columns), striding over the rows
// by the grid; VEC = 8 moves 16-byte vectors.
constexpr int row_block_threads = 512;
constexpr int permute_unroll = 4;  // rows a thread loads before it stores any: loads in flight

template <int VEC>
using row_vec = std::conditional_t<VEC == 8, bf16x8, bf16>;

template <int VEC>
__global__ void permute_rows_kernel(const bf16* __restrict__ x, int cols, const int* __restrict__ token,
                                    int copies, bf16* __restrict__ out) {
  using V = row_vec<VEC>;
  const int stride = gridDim.x * blockDim.y;
  for (int row0 = blockIdx.x * blockDim.y + threadIdx.y; row0 < copies; row0 += stride * permute_unroll) {
    for (int c = threadIdx.x * VEC; c < cols; c += blockDim.x * VEC) {
      V v[permute_unroll];
#pragma unroll
      for (int u = 0; u < permute_unroll; ++u) {
        const int row = row0 + u * stride;
        if (row < copies) v[u] = *reinterpret_cast<const V*>(x + static_cast<std::size_t>(token[row]) * cols + c);
      }
#pragma unroll
      for (int u = 0; u < permute_unroll; ++u) {
        const int row = row0 + u * stride;
        if (row < copies) *reinterpret_cast<V*>(out + static_cast<std::size_t>(row) * cols + c) = v[u];
      }
    }
  }
}

// y[t] (+)= sum_j w(t, j) * src[position[t, j]], in j order; weight == null means every weight is 1.
// blockDim.y token rows a block at a time, striding over the rows by the grid.
template <int VEC>
__global__ void gather_sum_kernel(const bf16* __restrict__ src, int cols, const int* __restrict__ position,
                                  const float* __restrict__ weight, int k, int rows, bf16* __restrict__ y,
                                  bool accumulate) {
  for (int t = blockIdx.x * blockDim.y + threadIdx.y; t < rows; t += gridDim.x * blockDim.y) {
    const std::size_t dst = static_cast<std::size_t>(t) * cols;
    for (int c = threadIdx.x * VEC; c < cols; c += blockDim.x * VEC) {
      float acc[VEC];
      if (accumulate) {
        if constexpr (VEC == 8) {
          unpack8(*reinterpret_cast<const bf16x8*>(y + dst + c), acc);
        } else {
          acc[0] = __bfloat162float(y[dst + c]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[i] = 0.f;
      }
      for (int j = 0; j < k; ++j) {
        const int p = position[static_cast<std::size_t>(t) * k + j];
        if (p < 0) continue;
        const float w = weight != nullptr ? weight[static_cast<std::size_t>(t) * k + j] : 1.f;
        const std::size_t s = static_cast<std::size_t>(p) * cols + c;
        if constexpr (VEC == 8) {
          float v[8];
          unpack8(*reinterpret_cast<const bf16x8*>(src + s), v);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] += w * v[i];
        } else {
          acc[0] += w * __bfloat162float(src[s]);
        }
      }
      if constexpr (VEC == 8) {
        *reinterpret_cast<bf16x8*>(y + dst + c) = pack8(acc);
      } else {
        y[dst + c] = __float2bfloat16(acc[0]);
      }
    }
  }
}

// One warp per copy at a time, striding over the copies by the grid's warps.
template <int VEC>
__global__ void unpermute_backward_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ expert_out,
                                          int cols, const int* __restrict__ token,
                                          const int* __restrict__ slot, int copies,
                                          const float* __restrict__ weight, int k, bf16* __restrict__ d_out,
                                          float* __restrict__ d_weight) {
  const int lane = threadIdx.x & 31;
  const int warps = blockDim.x >> 5;
  // Every lane of a warp holds the same i, so the loop and the warp reduction stay warp-uniform.
  for (int i = blockIdx.x * warps + (threadIdx.x >> 5); i < copies; i += gridDim.x * warps) {
    const std::size_t ts = static_cast<std::size_t>(token[i]) * k + slot[i];
    const float w = weight[ts];
    const std::size_t yrow = static_cast<std::size_t>(token[i]) * cols,
                      crow = static_cast<std::size_t>(i) * cols;
    float dot = 0.f;
    for (int c = lane * VEC; c < cols; c += 32 * VEC) {
      if constexpr (VEC == 8) {
        float g[8], o[8], d[8];
        unpack8(*reinterpret_cast<const bf16x8*>(dy + yrow + c), g);
        unpack8(*reinterpret_cast<const bf16x8*>(expert_out + crow + c), o);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          d[e] = w * g[e];
          dot += g[e] * o[e];
        }
        *reinterpret_cast<bf16x8*>(d_out + crow + c) = pack8(d);
      } else {
        const float g = __bfloat162float(dy[yrow + c]);
        d_out[crow + c] = __float2bfloat16(w * g);
        dot += g * __bfloat162float(expert_out[crow + c]);
      }
    }
    dot = warp_sum(dot);
    if (lane == 0) d_weight[ts] = dot;
  }
}

int row_threads(int cols, int vec) {
  const int per = (cols + vec - 1) / vec;
  int t = 32;
  while (t < per && t < 256) t *= 2;
  return t;
}

// The grid for `needed` blocks of work, capped at max_blocks when that is positive.
int capped_grid(long long needed, int max_blocks) {
  return static_cast<int>(max_blocks > 0 && needed > max_blocks ? max_blocks : needed);
}

// A row mover's block: row_threads lanes over the columns, as many rows as fill row_block_threads.
dim3 row_block(int cols, int vec) {
  const int lanes = row_threads(cols, vec);
  return dim3(lanes, std::max(1, row_block_threads / lanes));
}

// Blocks for `rows` rows of `per_thread` rows each per block row.
long long row_blocks(long long rows, const dim3& block, int per_thread) {
  const long long per_block = static_cast<long long>(block.y) * per_thread;
  return (rows + per_block - 1) / per_block;
}

}  // namespace

std::size_t route_plan_workspace_bytes(int rows, int k, int experts) {
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(k);
  const std::size_t chunks = static_cast<std::size_t>(chunks_of(static_cast<int>(n)));
  return (chunks * static_cast<std::size_t>(experts) + n) * sizeof(int) + 256;
}

expected<void> make_route_plan(const int* topk_idx, int rows, int k, int experts,
                               const route_plan_device& plan, void* workspace, std::size_t workspace_bytes,
                               cudaStream_t stream) {
  if (rows < 0 || k <= 0 || experts <= 0 || experts > max_experts)
    return invalid("make_route_plan: need rows >= 0, k > 0 and 0 < experts <= 12288");
  if (workspace_bytes < route_plan_workspace_bytes(rows, k, experts))
    return invalid("make_route_plan: workspace too small (see route_plan_workspace_bytes)");
  const int n = rows * k;
  const int chunks = chunks_of(n);
  int* counts = static_cast<int*>(workspace);
  int* rank = counts + static_cast<std::size_t>(chunks) * experts;
  const std::size_t hist_bytes = static_cast<std::size_t>(experts) * sizeof(int);
  if (hist_bytes > 48 * 1024) {
    if (auto e = check(cudaFuncSetAttribute(plan_count_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(hist_bytes)),
                       "cudaFuncSetAttribute(plan_count_kernel)");
        !e)
      return e;
    if (auto e = check(cudaFuncSetAttribute(plan_scan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(hist_bytes)),
                       "cudaFuncSetAttribute(plan_scan_kernel)");
        !e)
      return e;
  }
  if (chunks > 0) {
    plan_count_kernel<<<chunks, 32, hist_bytes, stream>>>(topk_idx, n, experts, counts, rank);
    if (auto e = launched("plan_count_kernel"); !e) return e;
  }
  plan_scan_kernel<<<1, scan_threads, hist_bytes, stream>>>(counts, chunks, experts, plan.offsets);
  if (auto e = launched("plan_scan_kernel"); !e) return e;
  if (n > 0) {
    plan_scatter_kernel<<<(n + 255) / 256, 256, 0, stream>>>(topk_idx, n, k, experts, counts, rank,
                                                             plan.token, plan.slot, plan.position);
    if (auto e = launched("plan_scatter_kernel"); !e) return e;
  }
  return {};
}

expected<void> permute_rows(const bf16* x, int cols, const route_plan_device& plan, int copies, bf16* out,
                            cudaStream_t stream, int max_blocks) {
  if (cols <= 0 || copies < 0) return invalid("permute_rows: bad shape");
  if (max_blocks < 0) return invalid("permute_rows: max_blocks must be >= 0 (0: no limit)");
  if (copies == 0) return {};
  if (vec_ok(cols, x, out)) {
    const dim3 block = row_block(cols, 8);
    const int grid = capped_grid(row_blocks(copies, block, permute_unroll), max_blocks);
    permute_rows_kernel<8><<<grid, block, 0, stream>>>(x, cols, plan.token, copies, out);
  } else {
    const dim3 block = row_block(cols, 1);
    const int grid = capped_grid(row_blocks(copies, block, permute_unroll), max_blocks);
    permute_rows_kernel<1><<<grid, block, 0, stream>>>(x, cols, plan.token, copies, out);
  }
  return launched("permute_rows_kernel");
}

expected<void> unpermute_weighted_sum(const bf16* expert_out, int cols, const route_plan_device& plan,
                                      const float* topk_weight, int k, int rows, bf16* y, bool accumulate,
                                      cudaStream_t stream, int max_blocks) {
  if (cols <= 0 || rows < 0 || k <= 0) return invalid("unpermute_weighted_sum: bad shape");
  if (max_blocks < 0) return invalid("unpermute_weighted_sum: max_blocks must be >= 0 (0: no limit)");
  if (rows == 0) return {};
  if (vec_ok(cols, expert_out, y)) {
    const dim3 block = row_block(cols, 8);
    const int grid = capped_grid(row_blocks(rows, block, 1), max_blocks);
    gather_sum_kernel<8><<<grid, block, 0, stream>>>(expert_out, cols, plan.position,
                                                                    topk_weight, k, rows, y, accumulate);
  } else {
    const dim3 block = row_block(cols, 1);
    const int grid = capped_grid(row_blocks(rows, block, 1), max_blocks);
    gather_sum_kernel<1><<<grid, block, 0, stream>>>(expert_out, cols, plan.position,
                                                                    topk_weight, k, rows, y, accumulate);
  }
  return launched("gather_sum_kernel(combine)");
}

expected<void> unpermute_backward(const bf16* dy, const bf16* expert_out, int cols,
                                  const route_plan_device& plan, int copies, const float* topk_weight, int k,
                                  bf16* d_expert_out, float* d_topk_weight, cudaStream_t stream,
                                  int max_blocks) {
  if (cols <= 0 || copies < 0 || k <= 0) return invalid("unpermute_backward: bad shape");
  if (max_blocks < 0) return invalid("unpermute_backward: max_blocks must be >= 0 (0: no limit)");
  if (copies == 0) return {};
  constexpr int warps = 8;
  const int blocks = capped_grid((copies + warps - 1) / warps, max_blocks);
  if (vec_ok(cols, dy, expert_out) && vec_ok(cols, d_expert_out, d_expert_out)) {
    unpermute_backward_kernel<8><<<blocks, 32 * warps, 0, stream>>>(
        dy, expert_out, cols, plan.token, plan.slot, copies, topk_weight, k, d_expert_out, d_topk_weight);
  } else {
    unpermute_backward_kernel<1><<<blocks, 32 * warps, 0, stream>>>(
        dy, expert_out, cols, plan.token, plan.slot, copies, topk_weight, k, d_expert_out, d_topk_weight);
  }
  return launched("unpermute_backward_kernel");
}

expected<void> permute_rows_backward(const bf16* d_out, int cols, const route_plan_device& plan, int k,
                                     int rows, bf16* dx, bool accumulate, cudaStream_t stream, int max_blocks) {
  if (cols <= 0 || rows < 0 || k <= 0) return invalid("permute_rows_backward: bad shape");
  if (max_blocks < 0) return invalid("permute_rows_backward: max_blocks must be >= 0 (0: no limit)");
  if (rows == 0) return {};
  if (vec_ok(cols, d_out, dx)) {
    const dim3 block = row_block(cols, 8);
    const int grid = capped_grid(row_blocks(rows, block, 1), max_blocks);
    gather_sum_kernel<8><<<grid, block, 0, stream>>>(d_out, cols, plan.position, nullptr, k, rows, dx, accumulate);
  } else {
    const dim3 block = row_block(cols, 1);
    const int grid = capped_grid(row_blocks(rows, block, 1), max_blocks);
    gather_sum_kernel<1><<<grid, block, 0, stream>>>(d_out, cols, plan.position, nullptr, k, rows, dx, accumulate);
  }
  return launched("gather_sum_kernel(permute backward)");
}

}  // namespace loom::cuda
