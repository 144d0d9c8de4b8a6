// loom: check, compile, simulate, plot and run mixture-of-experts pipeline schedules.
#include <CLI/CLI.hpp>

#include <iostream>

#include "apps/loom/commands.hpp"
#include "loom/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"loom: check, simulate and run pipeline schedules for mixture-of-experts training"};
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", std::string("loom ") + loom::version +
                                        (loom::built_with_cuda ? " (cuda" : " (cpu only") +
                                        (loom::built_with_nccl ? ", nccl)" : ")"));

  loom::app::action selected;
  loom::app::add_run_command(app, selected);
  loom::app::add_worker_command(app, selected);
  loom::app::add_check_command(app, selected);
  loom::app::add_compile_command(app, selected);
  loom::app::add_sim_command(app, selected);
  loom::app::add_plot_command(app, selected);
  loom::app::add_convert_command(app, selected);
  loom::app::add_devices_command(app, selected);
  loom::app::add_rebalance_command(app, selected);
  loom::app::add_submit_command(app, selected);
  loom::app::add_status_command(app, selected);
  loom::app::add_logs_command(app, selected);
  loom::app::add_cancel_command(app, selected);
  loom::app::add_results_command(app, selected);
  loom::app::add_list_command(app, selected);
  loom::app::add_compare_command(app, selected);
  loom::app::add_hosts_command(app, selected);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!selected) {
    std::cout << app.help();
    return 0;
  }
  return selected();
}
