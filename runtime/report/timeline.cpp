#include "runtime/report/timeline.hpp"

namespace loom::report {

timeline make_timeline(const schedule::schedule& s, const std::vector<std::vector<sim::span>>& spans, std::string title,
                       std::string unit) {
  timeline t;
  t.title = std::move(title);
  t.unit = std::move(unit);
  t.ranks = s.ranks();
  for (const auto& p : s.pipelines) t.pipelines.push_back(p.name);
  for (int r = 0; r < s.ranks(); ++r) {
    const auto& prog = s.programs[r];
    for (std::size_t i = 0; i < prog.size() && i < spans[r].size(); ++i) {
      timeline_event e;
      e.rank = r;
      e.start = spans[r][i].start;
      e.end = spans[r][i].end;
      e.action = prog[i];
      auto ref = s.placement[r][prog[i].first.chunk];
      e.pipeline_first = ref.pipeline;
      e.stage_first = ref.stage;
      if (prog[i].second) {
        auto ref2 = s.placement[r][prog[i].second->chunk];
        e.pipeline_second = ref2.pipeline;
        e.stage_second = ref2.stage;
      }
      t.events.push_back(std::move(e));
    }
  }
  return t;
}

}  // namespace loom::report
