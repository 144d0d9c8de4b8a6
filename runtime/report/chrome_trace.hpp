// A timeline in the Chrome trace event format (chrome://tracing, Perfetto's ui.perfetto.dev).
//
// One process per rank (pid = rank, or rank * ep + ep-index when t.ep > 1) named "rank R" (or
// "rank R ep E"), with thread 0 "actions" and, when the timeline has component spans, thread 1
// "compute" and thread 2 "comm". Each action is a complete event ("ph": "X", ts and dur in
// microseconds) named by its canonical token ("F0.3", "F0.7+B1.3"), category its kind ("F", "B",
// "I", "W", "F&B", "F&I", "F&F"), args rank, ep, microbatch, chunk, stage, pipeline (and for pairs
// microbatch2, chunk2, stage2, pipeline2). Each component span is a complete event on thread 1 or 2
// named by the component ("f.attn"), args rank, ep, component, layer and action (the token).
// Events are sorted by (pid, tid, ts), the metadata of a thread (process_name and
// process_sort_index on thread 0, thread_name) before its events.
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/report/timeline.hpp"

namespace loom::report {

// us_per_unit: microseconds per unit of the timeline (1000 for a timeline in ms; for cost-table
// units any scale that reads well, e.g. 1000 to show one unit as one millisecond).
nlohmann::json chrome_trace(const timeline& t, double us_per_unit);

// The category of an action: "F", "B", "I", "W", "F&B", "F&I" or "F&F".
std::string action_category(const schedule::action& a);

}  // namespace loom::report
