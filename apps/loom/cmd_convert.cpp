// `loom convert IN -o OUT [--to actions|csv|json]`: between the forms a schedule can take: the
// language or action text in, canonical action text, PyTorch pipelining CSV or JSON out (the form
// follows OUT's extension unless --to says).
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/report/schedule_json.hpp"
#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/pytorch_csv.hpp"

namespace loom::app {

namespace {

struct convert_options {
  schedule_options schedule;
  std::string out;
  std::string to;
  bool placement = false;
};

std::string form_of(const convert_options& o) {
  if (!o.to.empty()) return o.to;
  auto ends = [&](const char* ext) {
    std::string e(ext);
    return o.out.size() >= e.size() && o.out.compare(o.out.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".csv")) return "csv";
  if (ends(".json")) return "json";
  return "actions";
}

int run_convert(const convert_options& o) {
  auto loaded = o.schedule.load();
  if (!loaded) return 1;
  const auto& s = loaded->sched;
  const std::string form = form_of(o);
  std::string text = form == "csv"    ? schedule::format_pytorch_csv(s)
                     : form == "json" ? report::schedule_json(s).dump(1) + "\n"
                                      : schedule::format_actions(s, o.placement || s.pipelines.size() > 1);
  return write_output(o.out, text) ? 0 : 1;
}

}  // namespace

void add_convert_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("convert", "Convert a schedule between the language, action text, PyTorch CSV and JSON");
  auto o = std::make_shared<convert_options>();
  o->schedule.add_to(*cmd);
  cmd->add_option("-o,--output", o->out, "File to write ('-' for standard output)")->required();
  cmd->add_option("--to", o->to, "Output form (default: from OUT's extension: .csv, .json, else actions)")
      ->check(CLI::IsMember({"actions", "csv", "json"}));
  cmd->add_flag("--placement", o->placement,
                "Write 'pipeline' and 'place' lines into action text (always done when the schedule has several pipelines)");
  cmd->callback([&selected, o] { selected = [o] { return run_convert(*o); }; });
}

}  // namespace loom::app
