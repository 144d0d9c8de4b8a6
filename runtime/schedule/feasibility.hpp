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

#include <span>
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
  std::vector<p2p_message> messages;  // in the senders' program order, rank after rank
  std::vector<p2p_channel> channels;
  // Compressed per-action lists: the messages sent after action a of rank r are the ids
  // [send_begin[r][a], send_begin[r][a + 1]); those it needs first are recv_ids[r][recv_begin[r][a] ..
  // recv_begin[r][a + 1]).
  std::vector<std::vector<int>> send_begin, recv_begin, recv_ids;

  std::span<const int> receives(int rank, int action) const {
    return std::span<const int>(recv_ids[rank]).subspan(recv_begin[rank][action],
                                                       recv_begin[rank][action + 1] - recv_begin[rank][action]);
  }
  std::pair<int, int> sends(int rank, int action) const { return {send_begin[rank][action], send_begin[rank][action + 1]}; }
};

p2p_plan plan_p2p(const schedule& s, const step_table& table);

// "the activation main[1]->main[2] of microbatch 3"
std::string describe(const schedule& s, const p2p_message& m);

}  // namespace loom::schedule
