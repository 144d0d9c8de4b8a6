// One MoE transformer layer on one expert-parallel rank, split into the four components the runtime
// schedules separately, each with its forward, its backward for inputs and its backward for weights:
//
//   attention:  x -> RMSNorm -> causal attention -> + x = h -> RMSNorm = u -> router (top-k)
//   dispatch:   u's token copies -> the ranks owning their experts     (exchange by the transport)
//   mlp:        SwiGLU experts on the received copies; the shared expert on u
//   combine:    expert outputs -> back to the tokens' rank, weighted sum + shared + h = y
//
// The exchange itself is not here: dispatch_send/combine_send cut what goes to each rank, and
// dispatch_receive/combine_receive assemble what came back. With one rank (ep = 1) the caller hands
// the blocks straight through. Weight gradients are added into the param_set's double accumulators.
#pragma once

#include <vector>

#include "kernels/model/config.hpp"
#include "kernels/model/layer_state.hpp"
#include "kernels/model/params.hpp"

namespace loom::model {

// What travels between ranks for one exchange: rows and, for dispatch, how many per expert slot.
struct block {
  buffer rows;                 // [n, hidden]
  std::vector<int> counts;     // dispatch: rows per expert slot of the receiver
};

struct layer_ctx {
  const model_shape* shape = nullptr;
  ep_layout ep;
  const slot_map* slots = nullptr;  // where this layer's experts live
  int seqs = 1;                // sequences of this rank in this microbatch
  int first_token = 0;         // index of this rank's first token in the whole microbatch
  std::uint64_t token_seed = 0;  // identifies (step, microbatch, layer) for the router skew's noise
  int tokens() const { return seqs * shape->seq_len; }
  int local_slots() const { return slots->slots_per_rank; }
  param_set* params = nullptr;
  int local_layer = 0;
  // Weight-gradient scratch, reused between calls (not shared between threads).
  std::vector<float>* scratch = nullptr;
};

// --- forward ---
void attention_forward(const layer_ctx& c, layer_state& s);  // reads s.x
std::vector<block> dispatch_send(const layer_ctx& c, layer_state& s);  // one block per rank
void dispatch_receive(const layer_ctx& c, layer_state& s, std::vector<block> from);  // one per source rank
void mlp_forward(const layer_ctx& c, layer_state& s);        // experts on s.in, shared expert on s.u
std::vector<block> combine_send(const layer_ctx& c, layer_state& s);   // expert outputs back, per source
void combine_receive(const layer_ctx& c, layer_state& s, std::vector<block> from);  // writes s.y

// --- backward for inputs (reads s.dy) ---
std::vector<block> combine_backward_send(const layer_ctx& c, layer_state& s);  // d(expert out) to owners
void combine_backward_receive(const layer_ctx& c, layer_state& s, std::vector<block> from);  // owner: s.d_rows
void mlp_backward_input(const layer_ctx& c, layer_state& s);
std::vector<block> dispatch_backward_send(const layer_ctx& c, layer_state& s);  // d(expert in) to sources
void dispatch_backward_receive(const layer_ctx& c, layer_state& s, std::vector<block> from);  // s.du_moe
void attention_backward_input(const layer_ctx& c, layer_state& s);  // writes s.dx

// --- backward for weights ---
void mlp_backward_weight(const layer_ctx& c, layer_state& s);
void attention_backward_weight(const layer_ctx& c, layer_state& s);

// Adds to load[e] the number of this rank's token copies routed to expert e (global ids): the
// measured load that expert balancing works from.
void count_expert_load(const layer_ctx& c, const layer_state& s, std::vector<double>& load);

}  // namespace loom::model
