#include "runtime/schedule/validate.hpp"

#include <string>
#include <vector>

#include "runtime/schedule/limits.hpp"

namespace loom::schedule {

namespace {

std::string stage_name(const schedule& s, stage_ref ref) {
  return s.pipelines[ref.pipeline].name + "[" + std::to_string(ref.stage) + "]";
}

void check_placement(const schedule& s, diagnostic_list& diags) {
  if (s.pipelines.empty()) {
    diags.error(s.where, "the schedule declares no pipeline");
    return;
  }
  const int depth = s.pipelines.front().stages;
  for (const auto& p : s.pipelines) {
    if (p.stages <= 0) diags.error(s.where, "pipeline '" + p.name + "' has no stages");
    if (p.microbatches <= 0) diags.error(s.where, "pipeline '" + p.name + "' carries no microbatches");
    if (p.stages != depth)
      diags.error(s.where, "pipelines '" + s.pipelines.front().name + "' and '" + p.name +
                               "' have different numbers of stages (" + std::to_string(depth) + " and " +
                               std::to_string(p.stages) + "); every pipeline carries the same model");
  }
  // The checks below keep a record per (stage, microbatch): refuse sizes no valid schedule can have
  // within the action limit before allocating them.
  std::int64_t pairs = 0;
  for (const auto& p : s.pipelines) pairs += static_cast<std::int64_t>(std::max(0, p.stages)) * std::max(0, p.microbatches);
  if (pairs > static_cast<std::int64_t>(limits::max_actions)) {
    diags.limit_error(s.where, "the pipelines carry " + std::to_string(pairs) + " (stage, microbatch) pairs, more than the limit of " +
                                   std::to_string(limits::max_actions) + " actions");
    return;
  }
  if (static_cast<int>(s.placement.size()) != s.ranks()) {
    diags.error(s.where, "placement covers " + std::to_string(s.placement.size()) + " ranks but the schedule has " +
                             std::to_string(s.ranks()) + " rank programs");
    return;
  }
  std::vector<std::vector<int>> holder(s.pipelines.size());
  for (std::size_t p = 0; p < s.pipelines.size(); ++p) holder[p].assign(std::max(0, s.pipelines[p].stages), -1);
  for (int r = 0; r < s.ranks(); ++r) {
    if (s.placement[r].empty()) diags.error(s.rank_loc(r), "rank " + std::to_string(r) + " holds no chunk");
    for (std::size_t c = 0; c < s.placement[r].size(); ++c) {
      stage_ref ref = s.placement[r][c];
      if (ref.pipeline < 0 || ref.pipeline >= static_cast<int>(s.pipelines.size())) {
        diags.error(s.rank_loc(r), "rank " + std::to_string(r) + " chunk " + std::to_string(c) +
                                       " is placed on an unknown pipeline");
        continue;
      }
      const auto& pl = s.pipelines[ref.pipeline];
      if (ref.stage < 0 || ref.stage >= pl.stages) {
        diags.error(s.rank_loc(r), "rank " + std::to_string(r) + " chunk " + std::to_string(c) + " is placed on " +
                                       stage_name(s, ref) + ", but pipeline '" + pl.name + "' has stages 0.." +
                                       std::to_string(pl.stages - 1));
        continue;
      }
      int& h = holder[ref.pipeline][ref.stage];
      if (h >= 0)
        diags.error(s.rank_loc(r), "stage " + stage_name(s, ref) + " is placed twice: on rank " + std::to_string(h) +
                                       " and on rank " + std::to_string(r));
      else
        h = r;
    }
  }
  for (std::size_t p = 0; p < s.pipelines.size(); ++p)
    for (std::size_t st = 0; st < holder[p].size(); ++st)
      if (holder[p][st] < 0)
        diags.error(s.where, "stage " + stage_name(s, {static_cast<int>(p), static_cast<int>(st)}) +
                                 " is not placed on any rank");
}

// Per (rank, chunk, microbatch): where its F, backward and W appear in the program (action index).
struct seen {
  int f = -1, bwd = -1, w = -1;
  phase bwd_kind = phase::B;
};

void check_rank(const schedule& s, int r, bool training, diagnostic_list& diags) {
  const auto& prog = s.programs[r];
  const int chunks = static_cast<int>(s.placement[r].size());
  std::vector<std::vector<seen>> table(chunks);
  for (int c = 0; c < chunks; ++c) {
    int p = s.placement[r][c].pipeline;
    if (p >= 0 && p < static_cast<int>(s.pipelines.size())) table[c].assign(std::max(0, s.pipelines[p].microbatches), {});
  }
  const std::string rank_name = "rank " + std::to_string(r);

  auto visit = [&](const step& st, int index, const action& a, bool in_pair) {
    if (diags.full()) return;
    if (st.chunk < 0 || st.chunk >= chunks) {
      diags.error(a.where, rank_name + " has no chunk " + std::to_string(st.chunk) + " (it holds " +
                               std::to_string(chunks) + (chunks == 1 ? " chunk)" : " chunks)"));
      return;
    }
    auto& mbs = table[st.chunk];
    if (st.microbatch < 0 || st.microbatch >= static_cast<int>(mbs.size())) {
      const auto& pl = s.pipelines[s.placement[r][st.chunk].pipeline];
      diags.error(a.where, to_string(st) + ": microbatch " + std::to_string(st.microbatch) + " is out of range: pipeline '" +
                               pl.name + "' carries microbatches 0.." + std::to_string(pl.microbatches - 1));
      return;
    }
    seen& cell = mbs[st.microbatch];
    auto duplicate = [&](int first) {
      auto& d = diags.error(a.where, rank_name + " runs " + to_string(st) + " twice");
      d.notes.push_back({severity::note, prog[first].where, "first run here, in " + to_string(prog[first]), {}});
    };
    switch (st.kind) {
      case phase::F:
        if (cell.f >= 0) return duplicate(cell.f);
        cell.f = index;
        break;
      case phase::B:
      case phase::I:
        if (cell.bwd >= 0) {
          auto& d = diags.error(a.where, rank_name + " runs a second backward for chunk " + std::to_string(st.chunk) +
                                             " microbatch " + std::to_string(st.microbatch) + " (" + to_string(st) + ")");
          d.notes.push_back({severity::note, prog[cell.bwd].where, "the first is " + to_string(prog[cell.bwd]), {}});
          return;
        }
        if (cell.f < 0 || cell.f == index)
          diags.error(a.where, to_string(st) + " runs before its forward " + std::string("F") +
                                   std::to_string(st.chunk) + "." + std::to_string(st.microbatch) + " on " + rank_name);
        cell.bwd = index;
        cell.bwd_kind = st.kind;
        break;
      case phase::W:
        if (in_pair) diags.error(a.where, "W cannot be part of an overlapped pair");
        if (cell.w >= 0) return duplicate(cell.w);
        if (cell.bwd < 0 || cell.bwd_kind != phase::I)
          diags.error(a.where, to_string(st) + " runs before its I" + std::to_string(st.chunk) + "." +
                                   std::to_string(st.microbatch) + " on " + rank_name +
                                   " (W is the deferred weight part of an I)");
        cell.w = index;
        break;
    }
  };

  for (int i = 0; i < static_cast<int>(prog.size()) && !diags.full(); ++i) {
    const action& a = prog[i];
    if (a.second) {
      if (a.first.kind != phase::F || a.second->kind == phase::W)
        diags.error(a.where, "an overlapped pair is a forward with a backward (F&B, F&I) or with another forward (F&F), not " +
                                 to_string(a));
    }
    visit(a.first, i, a, a.is_pair());
    if (a.second) visit(*a.second, i, a, true);
  }

  for (int c = 0; c < chunks && !diags.full(); ++c) {
    for (int m = 0; m < static_cast<int>(table[c].size()) && !diags.full(); ++m) {
      const seen& cell = table[c][m];
      std::string id = std::to_string(c) + "." + std::to_string(m);
      if (cell.f < 0) diags.error(s.rank_loc(r), rank_name + " never runs F" + id);
      if (!training) continue;
      if (cell.bwd < 0)
        diags.error(s.rank_loc(r), rank_name + " never runs the backward of chunk " + std::to_string(c) +
                                       " microbatch " + std::to_string(m) + " (B" + id + ", or I" + id + " and W" + id + ")");
      else if (cell.bwd_kind == phase::I && cell.w < 0)
        diags.error(prog[cell.bwd].where, rank_name + " runs I" + id + " but never its weight part W" + id);
    }
  }
}

}  // namespace

void check_structure(const schedule& s, diagnostic_list& diags) {
  check_placement(s, diags);
  if (diags.has_errors()) return;
  const bool training = !s.forward_only();
  for (int r = 0; r < s.ranks() && !diags.full(); ++r) check_rank(s, r, training, diags);
}

expected<void> validate(const schedule& s, const source_set& sources) {
  diagnostic_list diags;
  check_structure(s, diags);
  if (!diags.has_errors()) check_feasible(s, diags);
  if (diags.has_errors())
    return unexpected(to_error(sources, diags, diags.hit_limit() ? errc::limit_exceeded : errc::invalid_schedule));
  return {};
}

}  // namespace loom::schedule
