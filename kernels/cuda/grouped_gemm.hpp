// The experts' GEMMs as grouped GEMMs over expert slots whose row counts live in device memory (the route
// plan's offsets): nothing is copied to the host, so dispatch -> expert MLP -> combine runs without a
// synchronisation. bf16 operands, fp32 accumulation.
//
//   grouped_gemm:       C[r, :] = A[r, :] B_g for the rows r of group g, [offsets[g], offsets[g+1]).
//                       Forward (x W1|W3, act W2: B_g row-major [k, n]) and backward for inputs
//                       (dy W2^T, dh W^T: B_g stored [n, k], weight_layout::nk).
//   grouped_gemm_wgrad: C_g[m, n] += A_g^T B_g over the rows of group g (the weight gradients; C fp32).
//
// Two implementations of our own, both tensor-core:
//   wgmma:    Hopper (sm_90a) warp-specialised kernel: one producer warp issues TMA (cp.async.bulk.tensor,
//             128-byte swizzle) into a 4-stage shared-memory ring guarded by mbarriers, two consumer
//             warpgroups run wgmma m64n256k16 (or n128) on 128 x 256 tiles; persistent CTAs walk the tiles.
//   mma_sync: portable fallback, cp.async 4-stage pipeline, ldmatrix + mma.sync m16n8k16, 128 x 128 tiles.
// The default is wgmma, the fastest measured (H100, docs/PERFORMANCE.md "GPU kernels"): 634 / 497 TFLOP/s on
// the two benchmark shapes against 236 / 243 for mma_sync and 289 / 284 for the cuBLAS grouped GEMM below,
// which in addition needs the sizes on the host.
//
// Requirements: k, n (and m for wgrad) multiples of 8, 16-byte aligned pointers, groups <= 1024; `rows` is
// the allocated row count of A and C (offsets[groups] <= rows), known on the host.
//
// `max_ctas` caps the wgmma kernel's persistent grid (0: one CTA per SM). A persistent CTA holds its SM
// until the whole GEMM ends, so a GEMM beside communication kernels leaves them the SMs they were
// given by taking fewer (the overlap recipe's "compute gets the rest"); mma_sync ignores it.
#pragma once

#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/types.hpp"

namespace loom::cuda {

enum class weight_layout {
  kn,  // B_g row-major [k, n] (x W)
  nk,  // B_g row-major [n, k] (x W^T)
};

enum class grouped_impl { wgmma, mma_sync };

// Chosen by bench/gpu_kernels_bench (grouped GEMM table): see the header comment.
constexpr grouped_impl default_grouped_impl = grouped_impl::wgmma;

// a: [rows, k]; b: [groups] x (k x n or n x k); c: [rows, n] (rows outside every group are not written).
expected<void> grouped_gemm(const bf16* a, const bf16* b, weight_layout layout, bf16* c, const int* offsets,
                            int groups, int rows, int n, int k, cudaStream_t stream,
                            grouped_impl impl = default_grouped_impl, int max_ctas = 0);

// a: [rows, m]; b: [rows, n]; c: fp32 [groups, m, n], accumulated (groups with no rows are left as they are).
expected<void> grouped_gemm_wgrad(const bf16* a, const bf16* b, float* c, const int* offsets, int groups,
                                  int rows, int m, int n, cudaStream_t stream,
                                  grouped_impl impl = default_grouped_impl, int max_ctas = 0);

// The cuBLAS comparison (cublasGemmGroupedBatchedEx): the same product as grouped_gemm, but the group
// sizes must be on the host (host_offsets: [groups + 1]); pointer arrays go through `scratch` (device
// memory of at least 3 * groups pointers). For benchmarks and checks, not the training path.
expected<void> grouped_gemm_cublas(blas& handle, const bf16* a, const bf16* b, weight_layout layout, bf16* c,
                                   const int* host_offsets, int groups, int n, int k, void* scratch,
                                   cudaStream_t stream);

}  // namespace loom::cuda
