// loom: check, compile, simulate, plot and run mixture-of-experts pipeline schedules.
// This is the front end: the schedule tools and the daemon's clients run here; run, worker and
// devices run in loom-engine, which this process becomes for them (apps/loom/engine.hpp).
#include <CLI/CLI.hpp>

#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/engine.hpp"
#include "apps/loom/top_level.hpp"

namespace {

// An engine command's line in `loom --help`; its own options and help are the engine's.
void add_engine_entry(CLI::App& app, const char* name) { app.add_subcommand(name, loom::app::engine_about(name)); }

}  // namespace

int main(int argc, char** argv) {
  // Before anything starts: the engine gets the process as it came.
  if (argc > 1 && loom::app::is_engine_command(argv[1])) {
    loom::error e = loom::app::exec_engine(argv);
    std::cerr << "loom: error: " << e.message << "\n";
    return 1;
  }

  CLI::App app{"loom: check, simulate and run pipeline schedules for mixture-of-experts training"};
  app.require_subcommand(0, 1);
  loom::app::add_version_flag(app);

  loom::app::action selected;
  add_engine_entry(app, "run");
  add_engine_entry(app, "worker");
  loom::app::add_check_command(app, selected);
  loom::app::add_compile_command(app, selected);
  loom::app::add_sim_command(app, selected);
  loom::app::add_plot_command(app, selected);
  loom::app::add_convert_command(app, selected);
  add_engine_entry(app, "devices");
  loom::app::add_rebalance_command(app, selected);
  loom::app::add_submit_command(app, selected);
  loom::app::add_status_command(app, selected);
  loom::app::add_logs_command(app, selected);
  loom::app::add_cancel_command(app, selected);
  loom::app::add_results_command(app, selected);
  loom::app::add_list_command(app, selected);
  loom::app::add_compare_command(app, selected);
  loom::app::add_hosts_command(app, selected);
  return loom::app::parse_and_run(app, selected, argc, argv);
}
