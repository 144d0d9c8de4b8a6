// Validation of a Schedule: the rules every schedule must keep before anything simulates or runs it.
//
// check_structure: placement (every stage of every pipeline held by exactly one rank, pipelines of
//   equal depth), counts (each stage runs each microbatch's F once and either B or I+W once, unless
//   the schedule is forward-only), order (B/I after its F, W after its I), pairs (F with B or I).
// check_feasible: the schedule runs to the end when pipeline sends and receives rendezvous as NCCL's
//   do (see feasibility.hpp); a rejection names ranks, actions and the wait-for cycle.
// Every diagnostic carries a location (the action, the rank's program, or the schedule header).
#pragma once

#include "runtime/schedule/schedule.hpp"
#include "support/diagnostic.hpp"

namespace loom::schedule {

void check_structure(const schedule& s, diagnostic_list& diags);

// Requires check_structure to have passed.
void check_feasible(const schedule& s, diagnostic_list& diags);

// Both checks; the error (invalid_schedule) holds the rendered diagnostics.
expected<void> validate(const schedule& s, const source_set& sources);

}  // namespace loom::schedule
