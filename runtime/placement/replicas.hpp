// How many copies each expert of a domain gets. Internal to the planner.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace loom::placement::detail {

// One copy each, then each spare slot to the expert with the highest load per copy (at most `cap`
// copies each). Minimises the largest copy.
std::vector<std::uint32_t> counts_by_load_per_copy(std::span<const double> load, std::size_t slots,
                                                   std::uint32_t cap);

// One copy each, then each spare slot to the expert (among the few with the highest load per copy) whose
// extra copy lowers most a lower bound on the heaviest GPU of any packing of the copies onto `gpus` GPUs
// of `slots_per_gpu` slots: the mean; the largest copy plus the slots_per_gpu-1 smallest; and, since
// some GPU holds k+1 of the k*gpus+1 largest copies (of different experts when copies
// of one expert must sit on different GPUs), the k+1 smallest of those plus the
// slots_per_gpu-k-1 smallest copies. Ties go to the highest load per copy. Unlike the rule above it
// stops splitting the hottest experts once their copies would outnumber the GPUs for nothing.
std::vector<std::uint32_t> counts_by_packing_bound(std::span<const double> load, std::uint32_t gpus,
                                                   std::uint32_t slots_per_gpu, std::uint32_t cap);

struct copy {
  double load;  // the expert's load / its copies
  std::uint32_t expert;
};

// The bound above for copies sorted from largest to smallest; with `distinct` (no GPU holds an expert
// twice) the copies sharing a GPU are of different experts. `total` is the sum of all loads.
double packing_bound(std::span<const copy> sorted_copies, std::uint32_t gpus, std::uint32_t slots_per_gpu,
                     bool distinct, double total);
// The same with scratch space from the caller.
double packing_bound(std::span<const copy> sorted_copies, std::uint32_t gpus, std::uint32_t slots_per_gpu,
                     bool distinct, double total, std::vector<std::uint32_t>& picked,
                     std::vector<double>& tail);

}  // namespace loom::placement::detail
