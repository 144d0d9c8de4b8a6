// The Schedule IR: what every pass after the language works on.
//
// A schedule is, per rank, an ordered list of actions over the rank's local chunks, plus the
// placement of each local chunk on a stage of a pipeline. Actions are the canonical tokens of the
// action text: F0.3 (forward of local chunk 0, microbatch 3), B, I (backward for inputs only), W
// (its deferred weight-gradient part), and overlapped pairs F0.7+B1.3 (forward first).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/source.hpp"

namespace loom::schedule {

enum class phase : std::uint8_t { F, B, I, W };

char to_char(phase p);

// One computation of a chunk: forward / backward / input-backward / weight-backward of a microbatch.
// `microbatch` is the index within the chunk's pipeline.
struct step {
  phase kind = phase::F;
  int chunk = 0;
  int microbatch = 0;
  friend bool operator==(const step&, const step&) = default;
};

// What a rank runs next: one step, or an overlapped pair: a forward with a backward (F&B, F&I), or
// two forwards (F&F, as prefill overlaps two microbatches). The forward comes first.
struct action {
  step first;
  std::optional<step> second;
  source_loc where;  // the statement that emitted it, for errors

  bool is_pair() const { return second.has_value(); }
};

struct pipeline {
  std::string name;
  int stages = 0;
  int microbatches = 0;  // how many microbatches this pipeline carries
};

struct stage_ref {
  int pipeline = 0;
  int stage = 0;
  friend bool operator==(const stage_ref&, const stage_ref&) = default;
};

// The four components of an MoE layer, as overlap recipes name them.
enum class component : std::uint8_t { attn, dispatch, mlp, combine };
const char* to_string(component c);
bool is_communication(component c);

// Which member of a pair a recipe item belongs to: f (the forward), b (the backward of an F&B
// pair) or f2 (the second forward of an F&F pair).
enum class pair_side : std::uint8_t { f, b, f2 };

// One entry of a recipe stream: "f.attn", "b.mlp", "b.mlp.w" (the weight-gradient part), "f2.combine".
struct recipe_item {
  pair_side side = pair_side::f;
  component part = component::attn;
  bool weight = false;
  source_loc where;
  friend bool operator==(const recipe_item& a, const recipe_item& b) {
    return a.side == b.side && a.part == b.part && a.weight == b.weight;
  }
};
std::string to_string(const recipe_item& item);

struct recipe_stream {
  std::string name;  // "compute" or "comm"
  int sms = 0;       // SM budget; 0 = not limited
  std::vector<recipe_item> order;
  source_loc where;
};

// How the components of the two members of an overlapped pair interleave. A recipe is for F&B pairs
// (items f.* and b.*) or for F&F pairs (items f.* and f2.*).
struct overlap_recipe {
  std::string name;
  std::vector<recipe_stream> streams;
  source_loc where;
};

// Redundant-expert placement policy (the `experts { ... }` block).
struct expert_policy {
  int redundant = 0;         // extra physical expert slots per layer
  int replan_interval = 0;   // steps between re-plans; 0 = plan once
  int window = 1;            // moving-average window of measured load, in steps
  std::string planner = "hierarchical";
  source_loc where;
};

struct schedule {
  std::string name;
  std::map<std::string, std::int64_t> params;  // what it was compiled with
  std::vector<pipeline> pipelines;
  std::vector<std::vector<stage_ref>> placement;  // [rank][local chunk]
  std::vector<std::vector<action>> programs;      // [rank]
  std::optional<overlap_recipe> overlap;          // for F&B and F&I pairs
  std::optional<overlap_recipe> forward_overlap;  // for F&F pairs
  std::optional<expert_policy> experts;
  source_loc where;                    // the schedule's header, for errors about the whole
  std::vector<source_loc> rank_where;  // each rank's program (may be empty), for errors about a rank

  int ranks() const { return static_cast<int>(programs.size()); }
  int chunks(int rank) const { return static_cast<int>(placement[rank].size()); }
  int total_microbatches() const;
  std::size_t action_count() const;
  // True when no rank runs a backward step (a prefill / inference schedule).
  bool forward_only() const;
  // Microbatch index across all pipelines: pipeline p's microbatch m follows those of pipelines < p.
  int global_microbatch(int pipeline, int microbatch) const;
  // Where to point an error about rank r when no single action is to blame.
  source_loc rank_loc(int rank) const;
  // The rank holding a stage, or -1.
  int owner(stage_ref ref) const;
};

// The model's view of a stage: every pipeline of a schedule carries the same model (DualPipe feeds
// one model from both ends), so stage s of any pipeline runs layers of logical stage s. The number
// of ranks holding a logical stage is its copy count (2 for DualPipe, 1 otherwise).
int logical_stages(const schedule& s);
int stage_copies(const schedule& s, int logical_stage);

// The canonical token of a step or action: "F0.3", "F0.7+B1.3".
std::string to_string(const step& s);
std::string to_string(const action& a);

}  // namespace loom::schedule
