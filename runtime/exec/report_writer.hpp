// What a run leaves behind: report.json (loss and gradient norm per step, the schedule and its
// parameters, per-op timings, measured and predicted makespan and idle time per rank, peak memory),
// trace.json (a Chrome trace: one event per executed action per rank, and one per component) and
// timeline.svg (the measured timeline drawn like the predicted one).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/exec/experiment.hpp"
#include "runtime/exec/run.hpp"
#include "runtime/report/timeline.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::exec {

// Measured makespan and busy time of one step, per rank, in milliseconds.
struct measured_step {
  double makespan_ms = 0;
  std::vector<double> busy_ms;  // per pipeline rank (the busiest of its expert-parallel ranks)
  std::vector<double> idle_ms;
};
measured_step measure_step(const run_result& r, int step);

// The timeline of one step as it ran (times in ms, every expert-parallel rank its own row).
report::timeline measured_timeline(const schedule::schedule& s, const run_result& r, int step, const std::string& title);

// The component-level prediction of a step: from the experiment's [costs] when it has one, else from
// the op times this run measured (the mean per kind of op).
struct prediction {
  sim::component_result result;
  std::string source;  // "costs table" or "measured op times"
  sim::component_costs costs;
};
prediction predict(const experiment& e, const schedule::schedule& s, const run_result& r);

nlohmann::json make_report(const experiment& e, const schedule::schedule& s, const run_result& r, const prediction& p);

// Writes report.json, trace.json and timeline.svg into e.out_dir (created if needed).
expected<void> write_outputs(const experiment& e, const schedule::schedule& s, const run_result& r);

}  // namespace loom::exec
