// Running an experiment embedded in this process: ranks are virtual ranks, each with its component
// actors and driver, over the local transport, coordinated by one coordinator actor.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "actors/coordinator.hpp"
#include "runtime/exec/experiment.hpp"
#include "runtime/lower/lowering.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::exec {

struct step_progress {
  int step = 0, steps = 0;
  double loss = 0, grad_norm = 0;
  double seconds = 0;  // this step's wall time
};

// A fault to inject (tests of failure handling): op `kind` of `microbatch` on `rank` fails, or
// never completes when `hang` is set.
struct injected_fault {
  int rank = 0;  // global rank
  actors::op_kind kind = actors::op_kind::attn_f;
  int microbatch = 0;
  bool hang = false;
};

struct run_options {
  std::function<void(const step_progress&)> on_step;
  bool collect_tensors = false;  // hand back every logical tensor's final value and last gradient
  std::optional<injected_fault> fault;
};

struct run_result {
  bool ok = true;
  std::string error;                  // when !ok: the experiment error; the steps before it are kept
  std::vector<double> loss;           // per completed step (mean cross-entropy); empty on timed
  std::vector<double> grad_norm;      // per completed step
  actors::run_outcome outcome;        // everything the ranks measured
  lower::lowered_schedule lowered;    // what ran, for mapping measurements to actions
  int ep = 1;
  int layers_per_chunk = 1;
  std::vector<replan_record> replans;  // expert re-plans, with the imbalance before and after
  std::map<std::string, std::vector<double>> grads;   // collect_tensors: by logical name
  std::map<std::string, std::vector<float>> values;
  double wall_seconds = 0;
};

// Checks the experiment against its compiled schedule (pp = ranks, stages dividing the layers, ...)
// and runs it. The error of a refused experiment is errc::invalid_experiment; a failed run returns
// a result with ok = false so its measured steps can still be reported.
expected<run_result> run_experiment(const experiment& e, const schedule::schedule& s, const run_options& opt = {});

// The checks of run_experiment alone, for `loom check`-style use and for the daemon's submit.
expected<void> check_experiment(const experiment& e, const schedule::schedule& s);

}  // namespace loom::exec
