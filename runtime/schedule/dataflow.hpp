// Where each step of a schedule runs, and what it waits for.
//
// For a structurally valid schedule, every (pipeline, stage, microbatch) has one forward, one
// backward (B or I) unless the schedule is forward-only, and one W after each I. The table maps each
// of them to the rank and action index that runs it, which the feasibility check, the simulators and
// the lowering all need.
#pragma once

#include <vector>

#include "runtime/schedule/schedule.hpp"

namespace loom::schedule {

struct action_pos {
  int rank = -1;
  int index = -1;  // position in the rank's program
  bool found() const { return rank >= 0; }
};

class step_table {
 public:
  explicit step_table(const schedule& s);

  // The global (pipeline, stage) of a rank's local chunk.
  stage_ref stage_of(int rank, int chunk) const { return placement_->at(rank).at(chunk); }
  int stages(int pipeline) const { return stages_[pipeline]; }

  action_pos forward(int pipeline, int stage, int microbatch) const { return at(fwd_, pipeline, stage, microbatch); }
  action_pos backward(int pipeline, int stage, int microbatch) const { return at(bwd_, pipeline, stage, microbatch); }
  action_pos weight(int pipeline, int stage, int microbatch) const { return at(wgt_, pipeline, stage, microbatch); }

  // The action that produces a step's cross-stage input (activation for F, gradient for B/I), or none
  // for the first stage's F, the last stage's backward, and W.
  action_pos input_producer(int rank, const step& st) const;

 private:
  std::size_t slot(int pipeline, int stage, int microbatch) const {
    return base_[pipeline] + static_cast<std::size_t>(stage) * mbs_[pipeline] + microbatch;
  }
  action_pos at(const std::vector<action_pos>& v, int p, int s, int m) const;

  const std::vector<std::vector<stage_ref>>* placement_;
  std::vector<int> stages_, mbs_;
  std::vector<std::size_t> base_;
  std::vector<action_pos> fwd_, bwd_, wgt_;
};

}  // namespace loom::schedule
