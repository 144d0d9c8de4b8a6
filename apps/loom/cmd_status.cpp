// `loom status [ID] [--json]`: what the daemon is doing. With an id, that experiment in detail;
// without, how many experiments are in each state and which run or wait. --json prints a list of
// objects with (at least) `id` and `status` (queued, running, done, failed, cancelled, interrupted).
#include <iostream>
#include <map>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "runtime/daemon/clock.hpp"

namespace loom::app {

namespace {

struct status_options {
  std::string id;
  bool json = false;
  daemon_options daemon;
};

void print_one(const daemon::experiment_info& x) {
  using daemon::format_time;
  std::cout << "experiment " << x.id << " (" << x.name << ", " << x.file << "): " << x.status << "\n";
  std::cout << "  submitted  " << format_time(x.submitted_at) << "\n";
  if (x.started_at > 0) std::cout << "  started    " << format_time(x.started_at) << (x.status == "running" ? "  (pid " + std::to_string(x.pid) + ")" : "") << "\n";
  if (x.finished_at > 0) std::cout << "  finished   " << format_time(x.finished_at) << "\n";
  if (x.procs > 0)
    std::cout << "  processes  " << x.procs << ", one per rank"
              << (x.hosts > 0 ? " over " + std::to_string(x.hosts) + " hosts" : std::string(" over the joined hosts")) << "\n";
  if (!x.overrides.empty()) {
    std::cout << "  overrides ";
    for (const auto& o : x.overrides) std::cout << " " << o;
    std::cout << "\n";
  }
  if (!x.result_dir.empty()) std::cout << "  results    " << x.result_dir << " (on the daemon's machine)\n";
  if (!x.error.empty()) std::cout << "  why        " << x.error << (x.error.back() == '\n' ? "" : "\n");
}

int status(const status_options& o) {
  std::int64_t id = 0;
  if (!o.id.empty()) {
    auto parsed = parse_id(o.id);
    if (!parsed) return client_error(parsed.error());
    id = *parsed;
  }
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->status(id);
  if (!r) return client_error(r.error());
  if (o.json) {
    std::cout << to_json_text(r->items, true) << "\n";
    return 0;
  }
  if (id != 0) {
    print_one(r->items.front());
    return 0;
  }
  std::map<std::string, int> counts;
  for (const auto& x : r->items) counts[x.status]++;
  std::cout << "loomd at " << (*c)->where() << ": " << r->items.size() << " experiments";
  std::string sep = " (";
  for (const char* s : daemon::status_names)
    if (counts[s]) {
      std::cout << sep << counts[s] << " " << s;
      sep = ", ";
    }
  std::cout << (sep == ", " ? ")" : "") << "\n";
  for (const auto& x : r->items)
    if (x.status == "running")
      std::cout << "  running  " << x.id << "  " << x.name << "  since " << daemon::format_time(x.started_at) << "\n";
  int shown = 0;
  for (const auto& x : r->items)
    if (x.status == "queued" && shown++ < 10) std::cout << "  queued   " << x.id << "  " << x.name << "\n";
  if (counts["queued"] > 10) std::cout << "  ... and " << counts["queued"] - 10 << " more queued\n";
  return 0;
}

}  // namespace

void add_status_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("status", "What the daemon is doing, or the state of one experiment");
  auto o = std::make_shared<status_options>();
  cmd->add_option("ID", o->id, "Experiment id (as `loom submit` printed)");
  cmd->add_flag("--json", o->json, "Print a JSON list of objects with id, status, times, error");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(status(*o)); }; });
}

}  // namespace loom::app
