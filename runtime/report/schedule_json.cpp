#include "runtime/report/schedule_json.hpp"

namespace loom::report {

namespace {

nlohmann::json recipe_json(const schedule::overlap_recipe& r) {
  nlohmann::json out{{"name", r.name}, {"streams", nlohmann::json::array()}};
  for (const auto& st : r.streams) {
    nlohmann::json items = nlohmann::json::array();
    for (const auto& it : st.order) items.push_back(schedule::to_string(it));
    out["streams"].push_back({{"name", st.name}, {"sms", st.sms}, {"order", items}});
  }
  return out;
}

}  // namespace

nlohmann::json schedule_json(const schedule::schedule& s) {
  nlohmann::json out;
  out["name"] = s.name;
  out["params"] = s.params;
  out["pipelines"] = nlohmann::json::array();
  for (const auto& p : s.pipelines)
    out["pipelines"].push_back({{"name", p.name}, {"stages", p.stages}, {"microbatches", p.microbatches}});
  out["placement"] = nlohmann::json::array();
  out["programs"] = nlohmann::json::array();
  for (int r = 0; r < s.ranks(); ++r) {
    nlohmann::json chunks = nlohmann::json::array();
    for (const auto& ref : s.placement[r]) chunks.push_back({{"pipeline", s.pipelines[ref.pipeline].name}, {"stage", ref.stage}});
    out["placement"].push_back(chunks);
    nlohmann::json prog = nlohmann::json::array();
    for (const auto& a : s.programs[r]) prog.push_back(schedule::to_string(a));
    out["programs"].push_back(prog);
  }
  if (s.overlap) out["overlap"] = recipe_json(*s.overlap);
  if (s.forward_overlap) out["forward_overlap"] = recipe_json(*s.forward_overlap);
  if (s.experts)
    out["experts"] = {{"redundant", s.experts->redundant},
                      {"replan_every", s.experts->replan_interval},
                      {"window", s.experts->window},
                      {"planner", s.experts->planner}};
  return out;
}

}  // namespace loom::report
