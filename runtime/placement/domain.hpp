// Planning inside one domain (one node in hierarchical mode, all GPUs otherwise): how many copies each
// of the domain's experts gets and which GPU holds each copy. Internal to the planner.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace loom::placement::detail {

struct domain_plan {
  std::vector<std::uint32_t> slots;   // gpus * slots_per_gpu domain-local experts, GPU after GPU
  std::vector<std::uint32_t> counts;  // copies of each domain-local expert
  double max_load = 0;                // heaviest GPU's load
  double sum_sq = 0;                  // sum of squared GPU loads (tie-breaker between plans)
};

// Plans `load.size()` experts onto `gpus` GPUs of `slots_per_gpu` slots each. Needs
// load.size() <= gpus * slots_per_gpu. When load.size() >= slots_per_gpu no GPU holds an expert twice
// and no expert has more than `gpus` copies. Several starts, the best plan wins:
//   - replica counts by the highest load per copy, or by the packing bound (replicas.hpp), then the
//     longest-processing-time rule: copies by falling load per copy, each onto the lightest GPU with a
//     free slot that does not hold that expert yet (one copy moves to make room when none is left);
//   - counts and packing at once for two target loads (the mean GPU load, and
//     halfway from it to the best plan so far): experts by falling load, each split into the fewest
//     copies that fit under the target on the lightest GPUs;
// each followed by a local search: swap copies between the heaviest GPU and another, and move a copy
// from one expert to another (re-splitting counts), while that lowers the heaviest load (or, at an
// equal heaviest load, the sum of squared loads).
domain_plan plan_domain(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu);

// One start of plan_domain from given replica counts (at most `gpus` each when load.size() >=
// slots_per_gpu, summing to gpus * slots_per_gpu).
domain_plan plan_domain_with_counts(std::span<const double> load, std::uint32_t gpus,
                                    std::uint32_t slots_per_gpu, std::vector<std::uint32_t> counts);

// One start of plan_domain from a target load.
domain_plan plan_domain_to_target(std::span<const double> load, std::uint32_t gpus,
                                  std::uint32_t slots_per_gpu, double target);

// The plain plan the anchor planner makes: copies to the highest load per copy (no cap), then the
// longest-processing-time rule onto the lightest GPU with a free slot, copies of one expert free to share
// a GPU; no local search.
domain_plan plan_domain_plain(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu);

// The local search of plan_domain (step 3) from `start`, copies of one expert free to share a GPU; never
// worse than `start`.
domain_plan improve_stacked(std::span<const double> load, std::uint32_t gpus, std::uint32_t slots_per_gpu,
                            const domain_plan& start);

// The heaviest GPU load and the sum of squared GPU loads of domain-local `slots` with `counts`.
void measure_domain(std::span<const double> load, std::span<const std::uint32_t> slots,
                    std::span<const std::uint32_t> counts, std::uint32_t gpus, double& max_load,
                    double& sum_sq);

}  // namespace loom::placement::detail
