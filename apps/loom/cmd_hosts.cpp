// `loom hosts [--json]`: the daemon and the daemons that joined it (loomd --join), with where they
// are reached and their worker slots: where `loom submit --procs N` can spread its processes.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "runtime/daemon/clock.hpp"

namespace loom::app {

namespace {

struct hosts_options {
  bool json = false;
  daemon_options daemon;
};

nlohmann::json to_json(const daemon::host_info& h, bool head) {
  return {{"name", h.name},       {"address", h.address}, {"version", h.version}, {"slots", h.slots},
          {"used", h.used},       {"head", head},         {"joined_at", h.joined_at}};
}

int hosts(const hosts_options& o) {
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->hosts();
  if (!r) return client_error(r.error());
  if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    arr.push_back(to_json(r->head, true));
    for (const auto& h : r->hosts) arr.push_back(to_json(h, false));
    std::cout << arr.dump(2) << "\n";
    return 0;
  }
  std::printf("%-20s %-24s %-7s %-6s %s\n", "HOST", "ADDRESS", "SLOTS", "USED", "JOINED");
  auto line = [](const daemon::host_info& h, const std::string& joined) {
    std::printf("%-20s %-24s %-7d %-6d %s\n", h.name.c_str(), h.address.empty() ? "-" : h.address.c_str(), h.slots, h.used,
                joined.c_str());
  };
  line(r->head, "(this daemon)");
  for (const auto& h : r->hosts) line(h, daemon::format_time(h.joined_at));
  if (r->hosts.empty()) std::cerr << "loom: no daemon has joined this one (start one on another host with loomd --join "
                                  << (*c)->where() << " --token-file COPY_OF_TOKEN)\n";
  return 0;
}

}  // namespace

void add_hosts_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("hosts", "The daemon and the daemons that joined it: where --procs runs spread");
  auto o = std::make_shared<hosts_options>();
  cmd->add_flag("--json", o->json, "Print a JSON list (the daemon asked first, with \"head\": true)");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(hosts(*o)); }; });
}

}  // namespace loom::app
