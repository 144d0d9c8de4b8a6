#include "apps/loom/run_output.hpp"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "apps/loom/schedule_options.hpp"
#include "runtime/exec/report_writer.hpp"

namespace loom::app {

void show_progress(const exec::step_progress& p, bool timed) {
  static const bool tty = isatty(STDERR_FILENO);
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

int finish_run(const exec::experiment& e, const schedule::schedule& s, const exec::run_result& r) {
  auto written = exec::write_outputs(e, s, r);
  if (!written) print_error(written.error());
  if (!r.ok) {
    std::cerr << "loom: error: experiment " << e.name << " failed: " << r.error << "\n";
    if (written) std::cerr << "loom: the partial report is in " << e.out_dir << "/report.json\n";
    return 1;
  }
  // The result a user reads: loss and gradient norm per step, and the makespan measured vs predicted.
  const bool timed = e.backend == exec::backend_kind::timed;
  for (std::size_t i = 0; i < r.grad_norm.size(); ++i) {
    char line[160];
    if (timed) std::snprintf(line, sizeof line, "step %zu  grad_norm (timed backend: no compute)\n", i);
    else std::snprintf(line, sizeof line, "step %zu  loss %.6f  grad_norm %.6f\n", i, r.loss[i], r.grad_norm[i]);
    std::cout << line;
  }
  auto m = exec::measure_step(r, static_cast<int>(r.outcome.steps.size()) - 1);
  auto p = exec::predict(e, s, r);
  char line[200];
  std::snprintf(line, sizeof line, "makespan %.2f ms measured, %.2f ms predicted (%s)\n", m.makespan_ms,
                p.result.actions.makespan, p.source.c_str());
  std::cout << line;
  std::cout << "report: " << e.out_dir << "/report.json, trace.json, timeline.svg\n";
  return written ? 0 : 1;
}

}  // namespace loom::app
