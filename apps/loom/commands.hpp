// Subcommands of `loom`. Each file cmd_NAME.cpp adds one subcommand to the parser and returns
// the action to run once the command line is parsed; an action returns the process exit status
// (0 success, 1 the work failed or the input is wrong, 2 usage errors come from the parser).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace loom::app {

using action = std::function<int()>;

// Registers a subcommand on `app`; when it is the one selected, `selected` is set to its action.
// run, worker and devices belong to loom-engine (engine_main.cpp), the others to loom (main.cpp).
void add_devices_command(CLI::App& app, action& selected);
void add_rebalance_command(CLI::App& app, action& selected);
void add_check_command(CLI::App& app, action& selected);
void add_compile_command(CLI::App& app, action& selected);
void add_sim_command(CLI::App& app, action& selected);
void add_run_command(CLI::App& app, action& selected);
void add_worker_command(CLI::App& app, action& selected);
void add_plot_command(CLI::App& app, action& selected);
void add_convert_command(CLI::App& app, action& selected);
// The daemon's clients (loomd; apps/loom/daemon_client.hpp).
void add_submit_command(CLI::App& app, action& selected);
void add_status_command(CLI::App& app, action& selected);
void add_logs_command(CLI::App& app, action& selected);
void add_cancel_command(CLI::App& app, action& selected);
void add_results_command(CLI::App& app, action& selected);
void add_list_command(CLI::App& app, action& selected);
void add_compare_command(CLI::App& app, action& selected);
void add_hosts_command(CLI::App& app, action& selected);

}  // namespace loom::app
