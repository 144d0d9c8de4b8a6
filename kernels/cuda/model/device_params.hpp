// The parameters of one chunk on the GPU, mirrored from its host param_set (kernels/model/params.hpp),
// which stays the master copy: the optimizer, gradient sums across ranks and expert migration work
// on the host tensors, and each step the new values go up and the gradients come down.
//
// On the device the weights are bf16, laid out for the kernels: W1 and W3 side by side as one
// [d, 2 ffn] matrix (one GEMM gives both halves SwiGLU reads), and the experts of a layer stacked
// ([slots, d, 2 ffn] and [slots, ffn, d]) for the grouped GEMMs. Gradients are fp32 in the same
// layouts, accumulated over the step's microbatches. The router bias stays fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "kernels/cuda/model/device_memory.hpp"
#include "kernels/cuda/model/page_locked_buffer.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/params.hpp"

namespace loom::cuda::model {

struct device_layer_params {
  dtensor norm1, wqkv, wo, norm2, router, router_bias, shared_w13, shared_w2, experts_w13, experts_w2;
  dtensor g_norm1, g_wqkv, g_wo, g_norm2, g_router, g_shared_w13, g_shared_w2, g_experts_w13, g_experts_w2;
  // Where this layer's experts live (model::slot_map), for choosing each token copy's slot:
  // copies of expert e are copy_slots[copy_offsets[e] .. copy_offsets[e + 1]).
  dtensor copy_offsets, copy_slots;
  int slots = 0;        // in the whole expert-parallel group
  int local_slots = 0;  // on this rank
};

struct device_edge_params {
  dtensor embed, final_norm, head;
  dtensor g_embed, g_final_norm, g_head;
};

class device_params {
 public:
  // Allocates the device tensors of `host` (its layers' slot maps in `slots`) and uploads them.
  static expected<device_params> create(device_pool& pool, const loom::model::model_shape& shape,
                                        const loom::model::param_set& host, const std::vector<loom::model::slot_map>& slots,
                                        cudaStream_t stream);
  // Copies the host values (after an optimizer step or an expert migration) and slot maps up.
  expected<void> upload(const loom::model::param_set& host, const std::vector<loom::model::slot_map>& slots,
                        cudaStream_t stream);
  // Adds the device gradients into the host's (double) and zeroes them; waits for the copies.
  expected<void> download_grads(loom::model::param_set& host, cudaStream_t stream);

  const device_layer_params& layer(int l) const { return layers_[l]; }
  const device_edge_params& edges() const { return edges_; }
  std::size_t bytes() const;

 private:
  // Page-locked host memory the copies go through, kept from step to step: the transfers run at full
  // PCIe rate and no step pays page faults for fresh buffers. Grown to the largest tensor on demand.
  page_locked_buffer staging_;

  device_pool* pool_ = nullptr;
  loom::model::model_shape shape_;
  std::vector<device_layer_params> layers_;
  device_edge_params edges_;
};

}  // namespace loom::cuda::model
