// `loom check FILE [--set NAME=VALUE]...`: is this schedule right? Parses, evaluates and validates
// (placement, counts, order, deadlock freedom), then says what the schedule is.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "dsl/compile.hpp"

namespace loom::app {

namespace {

std::string summary(const dsl::loaded_schedule& l) {
  const auto& s = l.sched;
  std::string pipes;
  for (const auto& p : s.pipelines) pipes += (pipes.empty() ? "" : ", ") + p.name;
  std::size_t pairs = 0;
  for (const auto& prog : s.programs)
    for (const auto& a : prog) pairs += a.is_pair();
  std::string out = "schedule " + s.name + ": " + std::to_string(s.ranks()) + " ranks, " +
                    std::to_string(s.total_microbatches()) + " microbatches over " + std::to_string(s.pipelines.size()) +
                    (s.pipelines.size() == 1 ? " pipeline (" : " pipelines (") + pipes + "), " +
                    std::to_string(s.placement.front().size()) + " chunk(s) per rank, " + std::to_string(s.action_count()) +
                    " actions (" + std::to_string(pairs) + " overlapped pairs)";
  if (s.forward_only()) out += ", forward only";
  if (s.overlap) out += ", recipe " + s.overlap->name;
  if (s.forward_overlap) out += ", forward recipe " + s.forward_overlap->name;
  return out;
}

}  // namespace

void add_check_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("check", "Check a schedule: syntax, placement, counts, order and deadlock freedom");
  auto opts = std::make_shared<schedule_options>();
  opts->add_to(*cmd);
  cmd->callback([&selected, opts] {
    selected = [opts] {
      auto loaded = opts->load();
      if (!loaded) return 1;
      std::cout << opts->file << ": ok: " << summary(*loaded) << "; it cannot deadlock\n";
      return 0;
    };
  });
}

}  // namespace loom::app
