// Which gradients a rank must sum with which other ranks after a step: tensors held by several
// ranks (DualPipe's two copies of a stage, tensors replicated across an expert-parallel group,
// redundant copies of an expert) are summed in a fixed order so every copy applies the same update.
//
// Each rank builds its own plan from facts every rank shares (which pipeline ranks hold each stage,
// and where each layer's experts live), so ranks agree without talking, and a rank can rebuild its
// plan after experts have moved.
#pragma once

#include <map>
#include <vector>

#include "actors/rank_context.hpp"

namespace loom::actors {

struct sync_group {
  std::vector<int> members;                // global ranks holding these tensors, ascending; [0] sums
  std::vector<std::vector<std::pair<int, int>>> tensors;  // per tensor (by name): this rank's copies
                                                           // as (local chunk, param slot)
  std::map<int, int> channel;              // per other member: the index of this group among the
                                           // groups the two ranks share (the tag of their messages)
};

struct sync_plan {
  std::vector<sync_group> groups;  // every group this rank belongs to, including single-rank ones
};

// stage_holders[s]: the pipeline ranks holding a chunk of logical stage s (two for DualPipe).
sync_plan build_sync_plan(const rank_context& ctx, const std::vector<std::vector<int>>& stage_holders);

}  // namespace loom::actors
