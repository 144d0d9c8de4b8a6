#include "runtime/report/chrome_trace.hpp"

#include <algorithm>
#include <set>
#include <tuple>

namespace loom::report {

std::string action_category(const schedule::action& a) {
  std::string out(1, schedule::to_char(a.first.kind));
  if (a.second) {
    out += '&';
    out += schedule::to_char(a.second->kind);
  }
  return out;
}

namespace {

using nlohmann::json;

enum thread_id { actions_tid = 0, compute_tid = 1, comm_tid = 2 };

int pid_of(const timeline& t, const timeline_event& e) { return t.ep > 1 ? e.rank * t.ep + e.ep : e.rank; }

std::string pipeline_name(const timeline& t, int index) {
  return index >= 0 && static_cast<std::size_t>(index) < t.pipelines.size() ? t.pipelines[index]
                                                                             : std::to_string(index);
}

json metadata(const char* name, int pid, int tid, json args) {
  return {{"name", name}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", std::move(args)}};
}

json complete(std::string name, std::string cat, int pid, int tid, double start, double end, double scale,
              json args) {
  return {{"name", std::move(name)}, {"cat", std::move(cat)},          {"ph", "X"},
          {"pid", pid},              {"tid", tid},                     {"ts", start * scale},
          {"dur", (end - start) * scale}, {"args", std::move(args)}};
}

json action_event(const timeline& t, const timeline_event& e, double scale) {
  const auto& a = e.action;
  json args = {{"rank", e.rank},
               {"ep", e.ep},
               {"microbatch", a.first.microbatch},
               {"chunk", a.first.chunk},
               {"stage", e.stage_first},
               {"pipeline", pipeline_name(t, e.pipeline_first)}};
  if (a.second) {
    args["microbatch2"] = a.second->microbatch;
    args["chunk2"] = a.second->chunk;
    args["stage2"] = e.stage_second;
    args["pipeline2"] = pipeline_name(t, e.pipeline_second);
  }
  return complete(schedule::to_string(a), action_category(a), pid_of(t, e), actions_tid, e.start, e.end, scale,
                  std::move(args));
}

json component_event(const timeline& t, const timeline_event& e, const component_span& c, double scale) {
  json args = {{"rank", e.rank},
               {"ep", e.ep},
               {"component", c.name},
               {"layer", c.layer},
               {"action", schedule::to_string(e.action)}};
  return complete(c.name, c.comm ? "comm" : "compute", pid_of(t, e), c.comm ? comm_tid : compute_tid, c.start,
                  c.end, scale, std::move(args));
}

// One process per pid that has events, with its thread names.
void add_metadata(const timeline& t, bool components, json& events) {
  std::set<std::pair<int, int>> processes;  // (pid, rank)
  for (const auto& e : t.events) processes.insert({pid_of(t, e), e.rank});
  for (const auto& [pid, rank] : processes) {
    std::string name = "rank " + std::to_string(rank);
    if (t.ep > 1) name += " ep " + std::to_string(pid - rank * t.ep);
    events.push_back(metadata("process_name", pid, actions_tid, {{"name", name}}));
    events.push_back(metadata("process_sort_index", pid, actions_tid, {{"sort_index", pid}}));
    events.push_back(metadata("thread_name", pid, actions_tid, {{"name", "actions"}}));
    if (!components) continue;
    events.push_back(metadata("thread_name", pid, compute_tid, {{"name", "compute"}}));
    events.push_back(metadata("thread_name", pid, comm_tid, {{"name", "comm"}}));
  }
}

// (pid, tid, ts), a thread's metadata first; stable, so ties keep the order they were added in.
void sort_events(json& events) {
  using key = std::tuple<int, int, bool, double>;
  std::vector<std::pair<key, json>> keyed;
  keyed.reserve(events.size());
  for (auto& e : events) {
    const bool meta = e["ph"] == "M";
    key k{e["pid"].get<int>(), e["tid"].get<int>(), !meta, meta ? 0.0 : e["ts"].get<double>()};
    keyed.emplace_back(k, std::move(e));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  events = json::array();
  for (auto& [k, e] : keyed) events.push_back(std::move(e));
}

}  // namespace

json chrome_trace(const timeline& t, double us_per_unit) {
  bool components = false;
  for (const auto& e : t.events) components = components || !e.components.empty();
  json events = json::array();
  add_metadata(t, components, events);
  for (const auto& e : t.events) {
    events.push_back(action_event(t, e, us_per_unit));
    for (const auto& c : e.components) events.push_back(component_event(t, e, c, us_per_unit));
  }
  sort_events(events);
  return {{"traceEvents", std::move(events)},
          {"displayTimeUnit", "ms"},
          {"otherData", {{"title", t.title}, {"unit", t.unit}, {"us_per_unit", us_per_unit}}}};
}

}  // namespace loom::report
