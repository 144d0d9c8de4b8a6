// One MoE transformer layer on the GPU for one expert-parallel rank: the CPU model's four components
// (kernels/model/moe_block.hpp) with the same semantics, in bf16 with fp32 accumulation, enqueued on
// the calling component's stream and never waiting for the GPU, with one exception: the dispatch
// learns how many token copies go to each rank (a few integers read back after the route plan), as
// any expert-parallel all-to-all must before it moves rows. The other exchanges reuse those counts.
//
// Exchanges between expert-parallel ranks on one GPU are device-to-device copies on the stream of the
// component that makes them; `device_block` is what one rank hands another: rows in device memory, the
// event after which they are valid, and for dispatch the rows per expert slot of the receiver.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/model/device_memory.hpp"
#include "kernels/cuda/model/device_params.hpp"
#include "kernels/cuda/model/host_readback.hpp"
#include "kernels/model/config.hpp"

namespace loom::cuda::model {

// An event owned by whoever holds the last reference (destroyed after the work it marks, as CUDA allows).
using shared_event = std::shared_ptr<CUevent_st>;
expected<shared_event> record_event(cudaStream_t stream);

struct device_block {
  dtensor rows;               // [row_count, hidden] bf16 from row_begin
  int row_begin = 0, row_count = 0;
  std::vector<int> counts;    // dispatch: rows per expert slot of the receiver
  shared_event ready;         // the rows are written once this has happened
};

// What every component call needs: the layer, this rank's place, and the caller's stream and handles.
struct layer_call {
  const loom::model::model_shape* shape = nullptr;
  int ep = 1, ep_index = 0;
  int seqs = 1;                 // sequences of this rank in the microbatch
  int first_token = 0;          // this rank's first token in the whole microbatch
  std::uint64_t token_seed = 0; // (step, microbatch, layer) for the router skew
  const device_layer_params* params = nullptr;
  device_pool* pool = nullptr;
  blas* gemm = nullptr;         // the calling component's cuBLASLt handle
  cudaStream_t stream = nullptr;
  float* load = nullptr;        // this layer's [experts] routed-copy counters, or null
  int max_blocks = 0;           // comm ops: the overlap recipe's SM budget (one block per SM); 0 = no limit
  int compute_sms = 0;          // compute ops beside comm ops: the SMs their GEMMs may fill; 0 = all
  host_readback* readback = nullptr;  // dispatch: the calling component's page-locked read-back, or null
                                      // (pageable: the host waits for every kernel before the read-back)
  int tokens() const { return seqs * shape->seq_len; }
};

// What one layer keeps for one microbatch between its forward and backward parts (the CPU model's
// layer_state, on the device). Counts the host must know are kept on the host.
struct device_layer_state {
  dtensor x, ln1, inv1, qkv, ctx, lse, h, u, inv2, scores, topk_idx, topk_w;
  // dispatch (source side): the route plan over expert slots, and its per-owner ranges
  dtensor plan_offsets, plan_token, plan_slot, plan_position;
  std::vector<int> slot_offsets;  // host copy of plan_offsets
  std::vector<int> send_offsets;  // [ep + 1] copies per owner rank
  // mlp (owner side)
  std::vector<int> expert_offsets;            // [local slots + 1]
  std::vector<std::vector<int>> counts_from;  // [source][local slot]
  std::vector<int> source_offsets;            // [source * local + slot]: first row in `in_rows`
  dtensor in_rows, expert_offsets_dev, h13, act, out;
  dtensor sh13, sact, ys;                     // the shared expert (source side)
  // combine (source side)
  dtensor expert_out, y;
  // backward
  dtensor dy, d_expert_out, d_topk_w, d_rows, dh13, dx_rows, dsh13, du_shared, du_moe, dlogits, dlogits16, du, dh, dqkv,
      dln1, dx;

  std::size_t bytes() const;
  // Every tensor frees in `stream`'s order (once the caller has fenced every stream that used them).
  void retire_on(cudaStream_t stream) const;
};

// --- forward ---
expected<void> attention_forward(const layer_call& c, device_layer_state& s);  // reads s.x
expected<std::vector<device_block>> dispatch_send(const layer_call& c, device_layer_state& s);  // one per rank
expected<void> dispatch_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from);
expected<void> mlp_forward(const layer_call& c, device_layer_state& s);
expected<std::vector<device_block>> combine_send(const layer_call& c, device_layer_state& s);
expected<void> combine_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from);  // s.y

// --- backward for inputs (reads s.dy) ---
expected<std::vector<device_block>> combine_backward_send(const layer_call& c, device_layer_state& s);
expected<void> combine_backward_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from);
expected<void> mlp_backward_input(const layer_call& c, device_layer_state& s);
expected<std::vector<device_block>> dispatch_backward_send(const layer_call& c, device_layer_state& s);
expected<void> dispatch_backward_receive(const layer_call& c, device_layer_state& s, std::vector<device_block> from);
expected<void> attention_backward_input(const layer_call& c, device_layer_state& s);  // s.dx

// --- backward for weights (into the fp32 gradients of c.params) ---
expected<void> mlp_backward_weight(const layer_call& c, device_layer_state& s);
expected<void> attention_backward_weight(const layer_call& c, device_layer_state& s);

}  // namespace loom::cuda::model
