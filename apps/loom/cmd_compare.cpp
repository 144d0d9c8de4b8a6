// `loom compare ID... [-o FILE]`: one static HTML page comparing experiments: their timelines side
// by side, measured vs predicted bubble, step time, time per component and memory. The daemon sends
// each report and timeline; the page needs no server and loads nothing from anywhere.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/daemon/compare_page.hpp"

namespace loom::app {

namespace {

struct compare_options {
  std::vector<std::string> ids;
  std::string out = "compare.html";
  std::string title;
  daemon_options daemon;
};

int compare(const compare_options& o) {
  std::vector<std::int64_t> ids;
  for (const auto& s : o.ids) {
    auto id = parse_id(s);
    if (!id) return client_error(id.error());
    ids.push_back(*id);
  }
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  std::vector<daemon::compared_experiment> xs;
  for (auto id : ids) {
    auto r = (*c)->results(id);
    if (!r) return client_error(r.error());
    if (r->report_json.empty())
      std::cerr << "loom: warning: experiment " << id << " is " << r->info.status << " and has no report yet\n";
    xs.push_back({r->info, std::move(r->report_json), std::move(r->timeline_svg)});
  }
  std::string title = o.title;
  if (title.empty()) {
    title = "loom: comparing experiments";
    for (auto id : ids) title += " " + std::to_string(id);
  }
  if (!write_output(o.out, daemon::compare_page(xs, title))) return 1;
  if (o.out != "-") std::cerr << "loom: wrote " << o.out << " (" << xs.size() << " experiments)\n";
  return 0;
}

}  // namespace

void add_compare_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("compare", "Write one HTML page comparing experiments (timelines, bubble, step time, memory)");
  auto o = std::make_shared<compare_options>();
  cmd->add_option("ID", o->ids, "Experiment ids")->required();
  cmd->add_option("-o,--out", o->out, "The page to write ('-' for stdout)")->capture_default_str();
  cmd->add_option("--title", o->title, "The page's title");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(compare(*o)); }; });
}

}  // namespace loom::app
