// What `loom run` and `loom worker` (rank 0) show and leave behind once a run ends: the progress
// bar while it runs, then loss and gradient norm per step, measured against predicted makespan, and
// report.json, trace.json and timeline.svg in the output folder.
#pragma once

#include "runtime/exec/experiment.hpp"
#include "runtime/exec/run.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::app {

// A progress line per step on stderr (rewritten in place on a terminal).
void show_progress(const exec::step_progress& p, bool timed);

// Writes the outputs and prints the summary; returns the process exit status.
int finish_run(const exec::experiment& e, const schedule::schedule& s, const exec::run_result& r);

}  // namespace loom::app
