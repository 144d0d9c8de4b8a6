// Hard limits shared by every reader of schedules, so no input can exhaust memory or time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loom::schedule::limits {

inline constexpr int max_ranks = 4096;
inline constexpr int max_microbatches = 1 << 20;
inline constexpr int max_chunks_per_rank = 64;
inline constexpr std::size_t max_actions = 8'000'000;       // emitted actions, all ranks together
inline constexpr std::size_t max_file_bytes = 4u << 20;     // one source file
inline constexpr std::size_t max_total_source_bytes = 16u << 20;  // a schedule and its imports
inline constexpr std::size_t max_eval_steps = 20'000'000;   // statements and loop trips evaluated
inline constexpr int max_nesting = 64;                      // blocks and parentheses
inline constexpr int max_expression_depth = 256;            // operators inside one expression
inline constexpr int max_import_depth = 16;
inline constexpr std::int64_t max_loop_trips = 10'000'000;  // one for/repeat

}  // namespace loom::schedule::limits
