// Point-to-point messages between pipeline stages, and the blocking model the feasibility check and
// the transports follow.
//
// Messages travel on channels, one per (sender, receiver, pipeline, direction), in order: a channel
// carries its messages in the order the sender produces them, and the receiver must consume them in
// that order. A receiver posts the receive for a channel's next message when it starts the action
// that consumes the previous one (one message in flight per channel, as DualPipe prefetches). A send
// blocks, as NCCL's does, until its receive is posted, and a rank starts its next action only when
// the sends of the last one have completed and the inputs of the next have arrived. A schedule is
// feasible when every rank gets through its program under these rules. Transfers between two chunks
// of the same rank need no message, but the producing action must come first in that rank's program.
#pragma once

#include <string>
#include <vector>

#include "runtime/schedule/dataflow.hpp"

namespace loom::schedule {

struct p2p_message {
  bool gradient = false;  // false: activation going forward; true: gradient going backward
  int pipeline = 0;
  int from_stage = 0;
  int microbatch = 0;
  int src = 0, dst = 0;  // ranks
  int producer = 0;      // action index on src whose output this is
  int consumer = 0;      // action index on dst that needs it
  int channel = 0;
  int sequence = 0;      // position within its channel
};

struct p2p_channel {
  int src = 0, dst = 0, pipeline = 0;
  bool gradient = false;
  std::vector<int> messages;  // in the sender's order
};

struct p2p_plan {
  std::vector<p2p_message> messages;
  std::vector<p2p_channel> channels;
  std::vector<std::vector<std::vector<int>>> sends;  // [rank][action]: messages sent after it
  std::vector<std::vector<std::vector<int>>> recvs;  // [rank][action]: messages it needs first
};

p2p_plan plan_p2p(const schedule& s, const step_table& table);

// "the activation main[1]->main[2] of microbatch 3"
std::string describe(const schedule& s, const p2p_message& m);

}  // namespace loom::schedule
