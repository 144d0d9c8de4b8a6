// `loom results ID [--json] [--save DIR]`: an experiment's outcome as the daemon holds it: status,
// loss and gradient norm per step, makespan and bubble measured against predicted, peak memory and
// the result files. --save copies report.json and timeline.svg here (the daemon sends them).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/loom/commands.hpp"
#include "apps/loom/daemon_client.hpp"
#include "apps/loom/schedule_options.hpp"

namespace loom::app {

namespace {

struct results_options {
  std::string id;
  bool json = false;
  std::string save;
  daemon_options daemon;
};

double number(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return -1;
    p = &(*p)[k];
  }
  return p->is_number() ? p->get<double>() : -1;
}

void print_report(const nlohmann::json& r) {
  char line[200];
  const auto& loss = r.value("loss", nlohmann::json::array());
  const auto& norm = r.value("grad_norm", nlohmann::json::array());
  for (std::size_t i = 0; i < norm.size(); ++i) {
    if (i < loss.size() && loss[i].is_number())
      std::snprintf(line, sizeof line, "step %zu  loss %.6f  grad_norm %.6f\n", i, loss[i].get<double>(), norm[i].get<double>());
    else
      std::snprintf(line, sizeof line, "step %zu  grad_norm %.6f\n", i, norm[i].get<double>());
    std::cout << line;
  }
  double mm = number(r, {"measured", "makespan"}), pm = number(r, {"predicted", "makespan"});
  double mb = number(r, {"measured", "bubble_ratio"}), pb = number(r, {"predicted", "bubble_ratio"});
  if (mm >= 0 && pm >= 0) {
    std::snprintf(line, sizeof line, "makespan %.2f ms measured, %.2f ms predicted; bubble %.1f%% measured, %.1f%% predicted\n",
                  mm, pm, 100 * mb, 100 * pb);
    std::cout << line;
  }
  double peak = number(r, {"memory", "peak_activation_bytes_max"});
  if (peak >= 0) {
    std::snprintf(line, sizeof line, "peak activations %.2f MiB (largest rank)\n", peak / 1048576.0);
    std::cout << line;
  }
}

int results(const results_options& o) {
  auto id = parse_id(o.id);
  if (!id) return client_error(id.error());
  auto c = daemon_client::connect(o.daemon);
  if (!c) return client_error(c.error());
  auto r = (*c)->results(*id);
  if (!r) return client_error(r.error());
  const auto& x = r->info;
  auto report = nlohmann::json::parse(r->report_json, nullptr, false);
  if (o.json) {
    nlohmann::json j = nlohmann::json::parse(to_json_text({x}, false));
    j["files"] = r->files;
    j["report"] = report.is_discarded() ? nlohmann::json() : report;
    std::cout << j.dump(1) << "\n";
  } else {
    std::cout << "experiment " << x.id << " (" << x.name << "): " << x.status << "\n";
    if (!x.error.empty()) std::cout << x.error << (x.error.back() == '\n' ? "" : "\n");
    if (!report.is_discarded()) print_report(report);
    else if (x.status == "queued" || x.status == "running") std::cout << "no results yet\n";
    if (!x.result_dir.empty() && !r->files.empty()) {
      std::cout << "files in " << x.result_dir << " (on the daemon's machine):";
      for (const auto& f : r->files) std::cout << " " << f;
      std::cout << "\n";
    }
  }
  if (!o.save.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.save, ec);
    bool ok = true;
    if (!r->report_json.empty()) ok &= write_output(o.save + "/report.json", r->report_json);
    if (!r->timeline_svg.empty()) ok &= write_output(o.save + "/timeline.svg", r->timeline_svg);
    if (!ok) return 1;
    std::cerr << "loom: saved report.json and timeline.svg in " << o.save << "\n";
  }
  return 0;
}

}  // namespace

void add_results_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("results", "Show an experiment's results (loss, makespan and bubble, memory, files)");
  auto o = std::make_shared<results_options>();
  cmd->add_option("ID", o->id, "Experiment id")->required();
  cmd->add_flag("--json", o->json, "Print the experiment and its report.json as JSON");
  cmd->add_option("--save", o->save, "Also write report.json and timeline.svg into this folder")->type_name("DIR");
  add_daemon_options(cmd, o->daemon);
  cmd->callback([&selected, o] { selected = [o]() -> int { exit_now(results(*o)); }; });
}

}  // namespace loom::app
