// The ends of the model on the GPU, as kernels/model/edges.hpp: the token embedding (first stage) and
// the final norm, language-model head and cross-entropy (last stage). Calls take the caller's
// stream, pool and cuBLASLt handle through a layer_call (its layer fields are not used).
#pragma once

#include "kernels/cuda/model/moe_layer.hpp"

namespace loom::cuda::model {

struct device_head_state {
  dtensor y, hn, inv, dlogits, dhn;
  std::size_t bytes() const;
  void retire_on(cudaStream_t stream) const;
};

// x[T, d] = embed[ids]
expected<void> embed_forward(const layer_call& c, const device_edge_params& p, const int* ids, dtensor& x);
// grad(embed)[ids] += dx
expected<void> embed_backward_weight(const layer_call& c, const device_edge_params& p, const int* ids, const dtensor& dx);
// Adds the tokens' summed cross-entropy to *loss_sum (device) and keeps dlogits (scaled by `scale`).
expected<void> head_forward(const layer_call& c, const device_edge_params& p, const int* targets, float scale,
                            device_head_state& s, double* loss_sum);
expected<void> head_backward_input(const layer_call& c, const device_edge_params& p, device_head_state& s, dtensor& dy);
expected<void> head_backward_weight(const layer_call& c, const device_edge_params& p, device_head_state& s);

}  // namespace loom::cuda::model
