// A timeline of executed (or predicted) actions per rank: what the SVG picture and the Chrome trace
// are drawn from. The simulators produce one, and so does a measured run.
#pragma once

#include <string>
#include <vector>

#include "runtime/schedule/schedule.hpp"
#include "runtime/sim/action_sim.hpp"

namespace loom::report {

// A finer span inside an action: one component on one stream ("f.attn" on compute).
struct component_span {
  double start = 0, end = 0;
  std::string name;  // "f.attn", "b.dispatch", "b.mlp.w", "p2p.send" ...
  bool comm = false; // on the communication stream
  int layer = 0;
};

struct timeline_event {
  int rank = 0;
  int ep = 0;                       // rank within the expert-parallel group (0 when ep = 1)
  double start = 0, end = 0;
  schedule::action action;          // the canonical action (token: schedule::to_string(action))
  int pipeline_first = 0;           // pipeline of action.first's chunk (0 = first pipeline)
  int pipeline_second = 0;          // pipeline of action.second's chunk, for pairs
  int stage_first = 0, stage_second = 0;
  std::vector<component_span> components;  // may be empty
};

struct timeline {
  std::string title;                // "dualpipe, 8 ranks, 20 microbatches (predicted)"
  std::string unit = "units";       // unit of start/end: "units" (cost-table units) or "ms"
  int ranks = 0;
  int ep = 1;                       // ranks per pipeline rank; events carry their ep index
  std::vector<std::string> pipelines;  // names, by pipeline index
  std::vector<timeline_event> events;  // any order
};

// The action-level timeline of a schedule from per-action spans ([rank][action]), e.g. the
// action-level simulator's.
timeline make_timeline(const schedule::schedule& s, const std::vector<std::vector<sim::span>>& spans,
                       std::string title, std::string unit);

}  // namespace loom::report
