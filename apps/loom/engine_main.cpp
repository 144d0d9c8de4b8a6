// loom-engine: the commands of `loom` that need the runtime's heavy libraries (run, worker,
// devices). Users type `loom run ...`: the front end (main.cpp) becomes this program for them.
#include <CLI/CLI.hpp>

#include "apps/loom/commands.hpp"
#include "apps/loom/top_level.hpp"

int main(int argc, char** argv) {
  CLI::App app{"loom-engine: runs experiments for loom (`loom run`, `loom worker` and `loom devices` start it)"};
  app.require_subcommand(0, 1);
  loom::app::add_version_flag(app);

  loom::app::action selected;
  loom::app::add_run_command(app, selected);
  loom::app::add_worker_command(app, selected);
  loom::app::add_devices_command(app, selected);
  return loom::app::parse_and_run(app, selected, argc, argv);
}
