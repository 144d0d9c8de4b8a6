// Lowering: a validated schedule becomes, per rank, a list of component operations on two in-order
// streams (compute and comm) plus pipeline sends and receives, with their dependencies. The
// component-level simulator predicts this list and the runtime executes it, so a prediction and a
// run describe the same work.
//
// Per layer, a forward is attn -> dispatch -> mlp -> combine and a backward combine -> mlp ->
// [mlp.w] -> dispatch -> attn -> [attn.w] (weight parts in a B; an I leaves them to its W). A chunk
// holding the first stage embeds tokens before its first layer; one holding the last stage runs the
// head and loss after its last layer (and the head's backward before its first backward layer).
// Overlapped pairs interleave their two chunks layer by layer in the order of the schedule's recipe
// (DeepSeek-V3's when it names none), and their layer ops carry the recipe's comm SM budget (comm ops
// keep to it, compute ops leave it free); other actions run their layers in plain order. An action's
// components wait for its pipeline inputs; its outputs are sent once all its components are done.
#pragma once

#include <cstdint>
#include <vector>

#include "actors/program.hpp"
#include "runtime/schedule/feasibility.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::lower {

using actors::op_kind;
using actors::stream;
using op = actors::program_op;
using rank_ops = actors::rank_program;

struct lowered_schedule {
  std::vector<rank_ops> ranks;
  schedule::p2p_plan p2p;
  int layers = 1;  // per chunk
  int stages = 1;  // logical stages
};

struct lowering_options {
  int layers = 1;      // layers per chunk
  int comm_sms = 20;   // SM budget of communication outside a recipe
};

// Requires a validated schedule.
lowered_schedule lower(const schedule::schedule& s, const lowering_options& opt);

}  // namespace loom::lower
