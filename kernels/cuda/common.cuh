// Device-side helpers shared by the kernels in kernels/cuda/*.cu (not a public header): warp reductions,
// bf16 packing, cp.async, ldmatrix, mma.sync m16n8k16 and the swizzled shared-memory addressing the tiled
// kernels use.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/types.hpp"

namespace loom::cuda::dev {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float2 unpack_bf16(uint32_t v) {
  __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&v);
  return __bfloat1622float2(h);
}

// 8 bf16 values in one 16-byte vector.
struct alignas(16) bf16x8 {
  uint32_t w[4];
};

__device__ __forceinline__ void unpack8(const bf16x8& v, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = unpack_bf16(v.w[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__device__ __forceinline__ bf16x8 pack8(const float (&f)[8]) {
  bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.w[i] = pack_bf16(f[2 * i], f[2 * i + 1]);
  return v;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy global -> shared; with valid = false the destination is zero-filled and the
// source is not read (it must still be a valid address expression, any pointer will do).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                            uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                                  uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// D = A B + D for one m16n8k16 tile: A row-major 16x16 (4 regs), B "col" 16x8 (2 regs), D fp32 (4 regs).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile whose rows hold CHUNKS chunks, with the
// chunk index XOR-swizzled so that the 8 rows an ldmatrix reads (same logical chunk) fall in 8 different
// bank groups. Rows of 128 bytes or more swizzle with the row's low 3 bits; 64-byte rows (two rows per
// 128 bytes) with bits 1-2.
template <int CHUNKS>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  static_assert(CHUNKS == 4 || CHUNKS % 8 == 0, "rows of 64 bytes or a multiple of 128 bytes");
  if constexpr (CHUNKS == 4) {
    return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
  } else {
    return static_cast<uint32_t>(row * CHUNKS * 16 + ((chunk ^ (row & 7)) << 4));
  }
}

// Fire-and-forget reductions into fp32 global memory: the L2 does the read-modify-write, so the thread
// does not wait for the old value (a plain load-add-store epilogue waits a memory latency per access).
__device__ __forceinline__ void red_add_v2(float* addr, float a, float b) {
  asm volatile("red.global.v2.f32.add [%0], {%1, %2};\n" ::"l"(addr), "f"(a), "f"(b) : "memory");
}
// addr 16-byte aligned.
__device__ __forceinline__ void red_add_v4(float* addr, float a, float b, float c, float d) {
  asm volatile("red.global.v4.f32.add [%0], {%1, %2, %3, %4};\n" ::"l"(addr), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
}

// Adds an m16n8 accumulator fragment pair (rows g and g + 8 of `row0`, columns 2t, 2t + 1 of `col0`; lane =
// 4 g + t) to fp32 C [rows, ld] with one 16-byte reduction per lane: neighbouring lanes swap halves so
// that the even lane holds four columns of row g and the odd lane four of row g + 8. Every lane of the
// warp must call it (it shuffles); rows at or past `rows` and columns at or past `cols` are skipped.
__device__ __forceinline__ void red_add_fragment(float* C, std::size_t ld, int rows, int cols, int row0, int col0,
                                                 const float* v) {
  const int lane = threadIdx.x & 31;
  const bool odd = lane & 1;
  const float give0 = odd ? v[0] : v[2], give1 = odd ? v[1] : v[3];
  const float got0 = __shfl_xor_sync(0xffffffffu, give0, 1);
  const float got1 = __shfl_xor_sync(0xffffffffu, give1, 1);
  const int row = row0 + (lane >> 2) + (odd ? 8 : 0);
  const int col = col0 + 4 * ((lane & 3) >> 1);
  if (row >= rows || col >= cols) return;
  float* at = C + static_cast<std::size_t>(row) * ld + col;
  if (odd)
    red_add_v4(at, got0, got1, v[2], v[3]);
  else
    red_add_v4(at, v[0], v[1], got0, got1);
}

}  // namespace loom::cuda::dev
