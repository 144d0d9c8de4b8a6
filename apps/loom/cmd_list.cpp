// `loom list [--status S] [--json]`: every experiment the daemon knows, oldest first, one line each.
#include <cstdio>
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "runtime/daemon/clock.hpp"

namespace loom::app {

namespace {

struct list_options {
  std::string status;
  bool json = false;
  daemon_options daemon;
};

std::string duration(const daemon::experiment_info& x) {
  if (x.started_at <= 0) return "-";
  double end = x.finished_at > 0 ? x.finished_at : daemon::unix_now();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", end - x.started_at);
  return buf;
}

int list(const list_options& o) {
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->status(0);
  if (!r) return client_error(r.error());
  std::vector<daemon::experiment_info> items;
  for (auto& x : r->items)
    if (o.status.empty() || x.status == o.status) items.push_back(std::move(x));
  if (o.json) {
    std::cout << to_json_text(items, true) << "\n";
    return 0;
  }
  std::printf("%-6s %-12s %-24s %-26s %-10s %s\n", "ID", "STATUS", "NAME", "SUBMITTED", "TIME", "FILE");
  for (const auto& x : items) {
    std::string error = x.error.substr(0, x.error.find('\n'));
    std::printf("%-6lld %-12s %-24s %-26s %-10s %s\n", static_cast<long long>(x.id), x.status.c_str(), x.name.c_str(),
                daemon::format_time(x.submitted_at).c_str(), duration(x).c_str(), x.file.c_str());
    if (!error.empty() && x.status != "done") std::printf("       %s\n", error.substr(0, 160).c_str());
  }
  return 0;
}

}  // namespace

void add_list_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("list", "List the daemon's experiments");
  auto o = std::make_shared<list_options>();
  cmd->add_option("--status", o->status, "Only those in this state")
      ->check(CLI::IsMember({"queued", "running", "done", "failed", "cancelled", "interrupted"}));
  cmd->add_flag("--json", o->json, "Print a JSON list");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(list(*o)); }; });
}

}  // namespace loom::app
