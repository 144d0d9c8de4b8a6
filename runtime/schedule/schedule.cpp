#include "runtime/schedule/schedule.hpp"

namespace loom::schedule {

char to_char(phase p) {
  switch (p) {
    case phase::F: return 'F';
    case phase::B: return 'B';
    case phase::I: return 'I';
    case phase::W: return 'W';
  }
  return '?';
}

const char* to_string(component c) {
  switch (c) {
    case component::attn: return "attn";
    case component::dispatch: return "dispatch";
    case component::mlp: return "mlp";
    case component::combine: return "combine";
  }
  return "?";
}

bool is_communication(component c) { return c == component::dispatch || c == component::combine; }

std::string to_string(const recipe_item& item) {
  std::string out = item.side == pair_side::b ? "b." : item.side == pair_side::f2 ? "f2." : "f.";
  out += to_string(item.part);
  if (item.weight) out += ".w";
  return out;
}

std::string to_string(const step& s) {
  std::string out(1, to_char(s.kind));
  out += std::to_string(s.chunk);
  out += '.';
  out += std::to_string(s.microbatch);
  return out;
}

std::string to_string(const action& a) {
  std::string out = to_string(a.first);
  if (a.second) {
    out += '+';
    out += to_string(*a.second);
  }
  return out;
}

int schedule::total_microbatches() const {
  int total = 0;
  for (const auto& p : pipelines) total += p.microbatches;
  return total;
}

std::size_t schedule::action_count() const {
  std::size_t n = 0;
  for (const auto& prog : programs) n += prog.size();
  return n;
}

bool schedule::forward_only() const {
  for (const auto& prog : programs)
    for (const auto& a : prog)
      if (a.first.kind != phase::F || (a.second && a.second->kind != phase::F)) return false;
  return true;
}

int schedule::global_microbatch(int pipeline_index, int microbatch) const {
  int offset = 0;
  for (int p = 0; p < pipeline_index; ++p) offset += pipelines[p].microbatches;
  return offset + microbatch;
}

source_loc schedule::rank_loc(int rank) const {
  if (rank >= 0 && static_cast<std::size_t>(rank) < rank_where.size() && rank_where[rank].known())
    return rank_where[rank];
  if (rank >= 0 && rank < ranks() && !programs[rank].empty()) return programs[rank].front().where;
  return where;
}

int schedule::owner(stage_ref ref) const {
  for (int r = 0; r < ranks(); ++r)
    for (const auto& held : placement[r])
      if (held == ref) return r;
  return -1;
}

int logical_stages(const schedule& s) { return s.pipelines.empty() ? 0 : s.pipelines.front().stages; }

int stage_copies(const schedule& s, int logical_stage) {
  int copies = 0;
  for (const auto& chunks : s.placement)
    for (const auto& ref : chunks)
      if (ref.stage == logical_stage) ++copies;
  return copies;
}

}  // namespace loom::schedule
