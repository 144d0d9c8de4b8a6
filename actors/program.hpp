// A rank's lowered program: component operations on two in-order streams (compute and comm) and
// pipeline messages (receive before an action, send after), with dependencies. runtime/lower makes
// it from a schedule; the rank driver executes it; the component-level simulator predicts it.
#pragma once

#include <cstdint>
#include <vector>

#include "actors/transport.hpp"

namespace loom::actors {

enum class op_kind : std::uint8_t {
  embed_f, attn_f, dispatch_f, mlp_f, combine_f, head_f,  // forward
  head_b, combine_b, mlp_b, dispatch_b, attn_b,            // backward for inputs
  head_w, mlp_w, attn_w, embed_w,                          // backward for weights
  recv, send,                                              // pipeline messages
};
inline constexpr int op_kind_count = 17;
const char* to_string(op_kind k);       // "attn_f", ...
const char* component_name(op_kind k);  // as recipes name them: "f.attn", "b.mlp.w", "f.head", "p2p.recv"
bool is_comm(op_kind k);                // dispatch and combine, forward or backward
bool is_weight(op_kind k);              // the weight-gradient parts

enum class stream : std::uint8_t { compute, comm, link };

// Which component actor of a chunk runs an op.
enum class component_role : std::uint8_t { attention, dispatch, mlp, combine };
component_role role_of(op_kind k);  // embedding and head ops run on the attention actor

struct program_op {
  op_kind kind = op_kind::attn_f;
  stream on = stream::compute;
  int action = 0;        // index in the rank's action list
  int chunk = 0;         // local chunk
  int layer = 0;         // layer within the chunk (0 for edges and messages)
  int microbatch = 0;    // within the chunk's pipeline
  int sms = 0;           // comm ops: the SM budget of their kernels; compute ops in a pair: the SMs they leave to comm
  int message = -1;      // recv / send: index of the pipeline message
  int peer = -1;         // recv / send: the other pipeline rank
  tag net_tag;           // recv / send: the message's tag
  std::vector<int> deps; // ops of the same rank that must finish first
};

// An output that stays on the rank: one chunk's output becomes another local chunk's input (the
// turn of a V-shaped pipeline), handed over when the producing action completes.
struct handover {
  int from_chunk = 0, to_chunk = 0;
  int microbatch = 0;   // the same microbatch on both chunks (one pipeline)
  bool gradient = false;
};

struct rank_program {
  std::vector<program_op> ops;
  std::vector<int> compute_queue, comm_queue;  // in issue order
  std::vector<std::vector<int>> action_ops;    // [action]: its component ops (messages not included)
  // [action]: the (chunk, microbatch) states finished with once the action completes: a B's or a
  // W's, and a forward's in a forward-only schedule.
  std::vector<std::vector<std::pair<int, int>>> releases;
  std::vector<std::vector<handover>> handovers;  // [action]: done when it completes, before releases
};

}  // namespace loom::actors
