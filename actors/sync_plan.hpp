// Which gradients a rank must sum with which other ranks after a step: tensors held by several
// ranks (DualPipe's two copies of a stage, tensors replicated across an expert-parallel group) are
// summed, in a fixed order, so every copy applies the same update.
#pragma once

#include <vector>

namespace loom::actors {

struct sync_group {
  int id = 0;                              // the same on every member rank
  std::vector<int> members;                // global ranks holding these tensors, ascending; [0] sums
  std::vector<std::vector<std::pair<int, int>>> tensors;  // per tensor (canonical order): this rank's
                                                           // copies as (local chunk, param slot)
};

struct sync_plan {
  std::vector<sync_group> groups;  // every group this rank belongs to, including single-rank ones
};

}  // namespace loom::actors
