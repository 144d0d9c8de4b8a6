#include "runtime/schedule/dataflow.hpp"

namespace loom::schedule {

step_table::step_table(const schedule& s) : placement_(&s.placement) {
  std::size_t total = 0;
  for (const auto& p : s.pipelines) {
    stages_.push_back(p.stages);
    mbs_.push_back(p.microbatches);
    base_.push_back(total);
    total += static_cast<std::size_t>(p.stages) * p.microbatches;
  }
  fwd_.assign(total, {});
  bwd_.assign(total, {});
  wgt_.assign(total, {});
  for (int r = 0; r < s.ranks(); ++r) {
    const auto& prog = s.programs[r];
    for (int i = 0; i < static_cast<int>(prog.size()); ++i) {
      auto record = [&](const step& st) {
        if (st.chunk < 0 || st.chunk >= static_cast<int>(s.placement[r].size())) return;
        stage_ref ref = s.placement[r][st.chunk];
        if (ref.pipeline < 0 || ref.pipeline >= static_cast<int>(mbs_.size())) return;
        if (ref.stage < 0 || ref.stage >= stages_[ref.pipeline]) return;
        if (st.microbatch < 0 || st.microbatch >= mbs_[ref.pipeline]) return;
        auto& table = st.kind == phase::F ? fwd_ : st.kind == phase::W ? wgt_ : bwd_;
        auto& cell = table[slot(ref.pipeline, ref.stage, st.microbatch)];
        if (!cell.found()) cell = {r, i};  // duplicates are the structure check's business
      };
      record(prog[i].first);
      if (prog[i].second) record(*prog[i].second);
    }
  }
}

action_pos step_table::at(const std::vector<action_pos>& v, int p, int s, int m) const {
  if (p < 0 || p >= static_cast<int>(mbs_.size()) || s < 0 || s >= stages_[p] || m < 0 || m >= mbs_[p]) return {};
  return v[slot(p, s, m)];
}

action_pos step_table::input_producer(int rank, const step& st) const {
  stage_ref ref = stage_of(rank, st.chunk);
  switch (st.kind) {
    case phase::F: return ref.stage > 0 ? forward(ref.pipeline, ref.stage - 1, st.microbatch) : action_pos{};
    case phase::B:
    case phase::I:
      return ref.stage + 1 < stages_[ref.pipeline] ? backward(ref.pipeline, ref.stage + 1, st.microbatch)
                                                   : action_pos{};
    case phase::W: return {};
  }
  return {};
}

}  // namespace loom::schedule
