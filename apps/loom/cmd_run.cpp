// `loom run EXP.toml [--set dotted.key=value]... [--out DIR]`: runs an experiment embedded in this
// process (no daemon), with a progress bar, and writes report.json, trace.json and timeline.svg.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "dsl/experiment_file.hpp"
#include "runtime/exec/report_writer.hpp"
#include "runtime/exec/run.hpp"

namespace loom::app {

namespace {

struct run_options {
  std::string file;
  std::vector<std::string> set;
  std::string out;
  bool quiet = false;
};

void progress(const exec::step_progress& p, bool tty, bool timed) {
  const int width = 24;
  const int filled = (p.step + 1) * width / p.steps;
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  char line[200];
  if (timed)
    std::snprintf(line, sizeof line, "step %d/%d [%s] %.2f s/step", p.step + 1, p.steps, bar.c_str(), p.seconds);
  else
    std::snprintf(line, sizeof line, "step %d/%d [%s] loss %.6f  grad norm %.6f  %.2f s/step", p.step + 1, p.steps,
                  bar.c_str(), p.loss, p.grad_norm, p.seconds);
  std::cerr << (tty ? "\r" : "") << line << (tty && p.step + 1 < p.steps ? "" : "\n") << std::flush;
}

int run(const run_options& o) {
  std::vector<std::string> overrides = o.set;
  if (!o.out.empty()) overrides.push_back("out=" + o.out);
  auto e = dsl::load_experiment(o.file, overrides);
  if (!e) {
    print_error(e.error());
    return 1;
  }
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto sched = dsl::load_schedule(req);
  if (!sched) {
    std::cerr << o.file << ": schedule " << e->schedule_file << " is not usable:\n";
    print_error(sched.error());
    return 1;
  }
  const auto& s = sched->sched;
  if (!o.quiet)
    std::cerr << "loom: " << e->name << ": " << s.name << " on " << e->pp << " x " << e->ep << " ranks ("
              << exec::to_string(e->backend) << "), " << s.total_microbatches() << " microbatches, " << e->steps << " steps\n";
  exec::run_options ro;
  const bool tty = isatty(STDERR_FILENO);
  const bool timed = e->backend == exec::backend_kind::timed;
  if (!o.quiet) ro.on_step = [&](const exec::step_progress& p) { progress(p, tty, timed); };
  auto result = exec::run_experiment(*e, s, ro);
  if (!result) {
    print_error(result.error());
    return 1;
  }
  auto written = exec::write_outputs(*e, s, *result);
  if (!written) print_error(written.error());
  if (!result->ok) {
    std::cerr << "loom: error: experiment " << e->name << " failed: " << result->error << "\n";
    if (written) std::cerr << "loom: the partial report is in " << e->out_dir << "/report.json\n";
    return 1;
  }
  // The result a user reads: loss and gradient norm per step, and the bubble measured vs predicted.
  for (std::size_t i = 0; i < result->grad_norm.size(); ++i) {
    char line[160];
    if (timed) std::snprintf(line, sizeof line, "step %zu  grad_norm (timed backend: no compute)\n", i);
    else std::snprintf(line, sizeof line, "step %zu  loss %.6f  grad_norm %.6f\n", i, result->loss[i], result->grad_norm[i]);
    std::cout << line;
  }
  auto m = exec::measure_step(*result, static_cast<int>(result->outcome.steps.size()) - 1);
  auto p = exec::predict(*e, s, *result);
  char line[200];
  std::snprintf(line, sizeof line, "makespan %.2f ms measured, %.2f ms predicted (%s)\n", m.makespan_ms,
                p.result.actions.makespan, p.source.c_str());
  std::cout << line;
  std::cout << "report: " << e->out_dir << "/report.json, trace.json, timeline.svg\n";
  return written ? 0 : 1;
}

}  // namespace

void add_run_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("run", "Run an experiment in this process (no daemon) and write its report");
  auto o = std::make_shared<run_options>();
  cmd->add_option("EXPERIMENT", o->file, "Experiment file (TOML)")->required();
  cmd->add_option("--set", o->set, "Override a setting: dotted.key=value (repeatable), e.g. --set schedule.file=x.sched")
      ->type_name("KEY=VALUE");
  cmd->add_option("--out", o->out, "Output folder (default: the experiment's `out`, or runs/NAME)");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  cmd->callback([&selected, o] { selected = [o] { return run(*o); }; });
}

}  // namespace loom::app
