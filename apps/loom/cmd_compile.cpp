// `loom compile FILE [--set NAME=VALUE]... --emit actions|csv|json [-o OUT]`: the per-rank action
// order of a schedule, as canonical action text, PyTorch pipelining CSV or JSON.
#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/schedule/action_text.hpp"
#include "runtime/report/schedule_json.hpp"
#include "runtime/schedule/pytorch_csv.hpp"

namespace loom::app {

void add_compile_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("compile", "Print a schedule's per-rank action order");
  auto opts = std::make_shared<schedule_options>();
  auto emit = std::make_shared<std::string>("actions");
  auto out = std::make_shared<std::string>();
  opts->add_to(*cmd);
  cmd->add_option("--emit", *emit, "Output form: actions (canonical text), csv (PyTorch pipelining) or json")
      ->check(CLI::IsMember({"actions", "csv", "json"}));
  cmd->add_option("-o,--output", *out, "Write to this file instead of standard output");
  cmd->callback([&selected, opts, emit, out] {
    selected = [opts, emit, out] {
      auto loaded = opts->load();
      if (!loaded) return 1;
      const auto& s = loaded->sched;
      std::string text = *emit == "actions" ? schedule::format_actions(s)
                         : *emit == "csv"   ? schedule::format_pytorch_csv(s)
                                            : report::schedule_json(s).dump(1) + "\n";
      return write_output(*out, text) ? 0 : 1;
    };
  });
}

}  // namespace loom::app
