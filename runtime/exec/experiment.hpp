// An experiment: the model, the parallel layout, the schedule and how to run it. Loaded from a TOML
// file by dsl/experiment_file.hpp; this header has no TOML in it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "runtime/exec/expert_balancer.hpp"
#include "runtime/sim/component_sim.hpp"

namespace loom::exec {

enum class gating_kind { softmax, sigmoid };
enum class backend_kind { cpu, timed, cuda };

const char* to_string(backend_kind b);

// The MoE transformer of DESIGN.md. `layers` counts the whole model; each of the schedule's stages
// gets layers / stages of them.
struct model_config {
  int hidden = 64;
  int heads = 4;
  int layers = 4;
  int experts = 8;
  int top_k = 2;
  int expert_ffn = 64;
  int shared_ffn = 64;      // 0: no shared expert
  int vocab = 256;
  int seq_len = 32;
  gating_kind gating = gating_kind::softmax;
  float bias_update_rate = 0.001f;  // sigmoid gating: DeepSeek-V3's auxiliary-loss-free bias step
  float norm_eps = 1e-5f;
  float init_scale = 0.02f;
  float router_skew = 0.f;          // Zipf-like expert popularity (see model::model_shape)
};

struct optimizer_config {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

struct experiment {
  std::string name = "experiment";
  std::string path;            // the file it came from
  std::string dir;             // its folder: relative paths in it resolve from here
  std::uint64_t seed = 1;
  int steps = 1;
  backend_kind backend = backend_kind::cpu;
  std::string out_dir;         // where report.json, trace.json, timeline.svg go

  model_config model;
  optimizer_config optimizer;
  int microbatch_size = 4;     // sequences per microbatch, split across the ep ranks of a stage
  int pp = 1;                  // pipeline ranks: the schedule's `ranks`
  int ep = 1;                  // expert-parallel ranks per pipeline rank

  std::string schedule_file;                     // resolved path
  std::string schedule_text;                     // contents, when submitted without a file on disk
  std::map<std::string, std::string> schedule_params;  // passed to the schedule (ranks, microbatches, ...)

  expert_policy_config experts;  // redundant experts and re-planning ([experts], or the schedule's block)
  bool have_experts = false;     // [experts] was given
  sim::component_costs costs;  // for the timed backend and the predicted timeline (milliseconds)
  bool have_costs = false;     // [costs] was given
  double watchdog_seconds = 120;  // a step that makes no progress for this long fails the experiment
  int cpu_threads = 0;            // actor scheduler threads; 0: the number of cores
};

}  // namespace loom::exec
