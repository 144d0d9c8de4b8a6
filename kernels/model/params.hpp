// The parameters of a stage: a flat list of named tensors with their gradients and AdamW state.
//
// Names are logical ("layer3.attn.wqkv", "layer3.expert5.w1", "embed"), identical on every copy of a
// stage, so gradient sums across copies and expert-parallel ranks match tensors by name. Values are
// initialised from (seed, name) alone: every placement of the model starts from the same weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/model/config.hpp"

namespace loom::model {

struct param {
  std::string name;
  std::vector<float> value;
  std::vector<double> grad;  // summed over the step's microbatches in double: order-independent
  std::vector<float> m, v;   // AdamW moments
  bool replicated = false;   // every rank of an expert-parallel group holds a copy
  bool decay = true;         // weight decay applies (not to norm gains and biases)
  bool trainable = true;     // the router bias is updated by load, not by gradient
};

// Index of each tensor of one layer in a param_set.
struct layer_slots {
  int norm1 = -1, wqkv = -1, wo = -1, norm2 = -1, router = -1, router_bias = -1;
  int shared_w1 = -1, shared_w3 = -1, shared_w2 = -1;
  std::vector<int> slot_expert;   // logical expert held by each of this rank's expert slots
  std::vector<int> expert_w1, expert_w3, expert_w2;  // per local slot
};

struct edge_slots {
  int embed = -1;       // first stage
  int final_norm = -1;  // last stage
  int head = -1;        // last stage
};

class param_set {
 public:
  // The tensors of logical layers [first_layer, first_layer + layers) for one expert-parallel rank,
  // plus the embedding (first stage) and the head (last stage). local_experts[l] lists the logical
  // expert of each of the rank's expert slots in layer l (copies of one expert start identical).
  param_set(const model_shape& shape, const std::vector<std::vector<int>>& local_experts, int first_layer, int layers,
            bool first_stage, bool last_stage, std::uint64_t seed);

  std::vector<param>& all() { return params_; }
  const std::vector<param>& all() const { return params_; }
  param& at(int slot) { return params_[slot]; }
  const param& at(int slot) const { return params_[slot]; }
  const layer_slots& layer(int local_layer) const { return layers_[local_layer]; }
  int layers() const { return static_cast<int>(layers_.size()); }
  const edge_slots& edges() const { return edges_; }

  void zero_grads();

  // Gives local slot `slot` of layer `local_layer` to logical expert `expert`, with the tensors
  // (value, m, v for w1, w3, w2, in that order) the caller moved from the expert's previous holder.
  void assign_slot(int local_layer, int slot, int expert, std::vector<std::vector<float>> state);
  // The state assign_slot takes, read from a slot: value, m, v of w1, w3, w2.
  std::vector<std::vector<float>> slot_state(int local_layer, int slot) const;
  std::size_t bytes() const;  // values, gradients and optimizer state

 private:
  int add(std::string name, std::size_t size, bool replicated, bool decay, float init, std::uint64_t seed);
  std::string expert_name(int local_layer, int expert, const char* tensor) const;
  int first_layer_ = 0;
  std::vector<param> params_;
  std::vector<layer_slots> layers_;
  edge_slots edges_;
};

// Deterministic initial values: uniform in [-scale * sqrt(3), scale * sqrt(3)] (std = scale) from
// (seed, name); scale 0 gives zeros and a negative scale gives -scale everywhere (norm gains = 1).
void init_tensor(std::vector<float>& t, const std::string& name, std::uint64_t seed, float scale);

}  // namespace loom::model
