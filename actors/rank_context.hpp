// Everything one rank's actors share: its chunks' parameters, the state microbatches leave behind
// between forward and backward, its transport handle and what it measures. The rank driver and the
// rank's component actors hold it; component work on one (chunk, microbatch) is serialised by the
// lowered program's dependencies, so only the map of in-flight states needs a lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/transport.hpp"
#include "kernels/model/edges.hpp"
#include "kernels/model/layer_state.hpp"
#include "kernels/model/params.hpp"
#include "kernels/model/synthetic_data.hpp"

namespace loom::actors {

enum class backend { cpu, timed, cuda };

// The GPU state of a rank and of one (chunk, microbatch), for the cuda backend (actors/cuda_backend.hpp).
struct device_rank;
struct device_run;

// What a local chunk is: where it sits in the model and its parameters.
struct chunk_info {
  std::vector<model::slot_map> slots;  // per layer: where the experts live (shared by the ep group)
  int pipeline = 0;
  int stage = 0;                // = logical stage
  int first_layer = 0;          // logical index of its first layer
  int microbatch_offset = 0;    // global id of its pipeline's microbatch 0
  bool first_stage = false, last_stage = false;
  std::unique_ptr<model::param_set> params;
};

// A microbatch of a chunk in flight: per layer what forward left for backward, and the edges.
struct chunk_run {
  std::vector<model::layer_state> layers;
  model::head_state head;
  model::token_batch tokens;     // this rank's share of the microbatch
  std::vector<float> input_grad; // the chunk input's gradient, to send backward
  std::shared_ptr<device_run> gpu;  // cuda backend: all of the above lives here instead
};

// A fault to inject, for tests of failure handling: the op of this kind on this (chunk, microbatch)
// fails (or never completes, for `hang`).
struct fault {
  std::uint8_t kind = 0;
  int microbatch = 0;
  bool hang = false;
};

struct rank_context {
  int pipeline_rank = 0;        // the schedule's rank
  int ep_index = 0;             // within its expert-parallel group
  int global_rank = 0;          // pipeline_rank * ep + ep_index
  model::model_shape shape;
  model::ep_layout ep;
  int layers_per_chunk = 1;
  int seqs = 1;                 // sequences of this rank per microbatch
  std::uint64_t seed = 1;
  double total_tokens = 1;      // tokens in a step, all ranks: the loss is their mean
  std::vector<chunk_info> chunks;
  transport net;
  backend mode = backend::cpu;
  std::shared_ptr<device_rank> gpu;  // cuda backend
  std::optional<fault> inject;

  // Timed backend: the duration of each op kind (op_kind), in milliseconds, and the SMs of the
  // device: a compute op progresses at (sms_total - s) / sms_total while a comm op taking s SMs
  // runs, as the component-level simulator assumes.
  std::vector<double> timed_ms;
  int sms_total = 132;
  struct comm_interval {
    std::int64_t start_ns = 0, end_ns = -1;  // end -1: still running
    int sms = 0;
  };
  std::mutex comm_mutex;
  std::vector<comm_interval> comm_log;  // this step's comm ops, for the timed backend
  // Timer lateness owed per stream (0 compute, 1 comm): a timer fires some 0.1 ms late on a
  // virtual machine, so the next timed op on that stream is shortened by what the last one overran,
  // and lateness does not pile up along a schedule.
  std::int64_t timer_debt_ns[2] = {0, 0};
  // Work a compute op started at `start` has done by `now` (ns at full rate), and its rate now.
  double timed_work(std::int64_t start, std::int64_t now, double& rate_now);

  int step = 0;
  std::chrono::steady_clock::time_point step_start;
  std::int64_t now_ns() const;

  // In-flight state of (chunk, microbatch), created on first use.
  chunk_run& run(int chunk, int microbatch);
  void release(int chunk, int microbatch);
  std::int64_t held_bytes();     // activations held now
  std::int64_t peak_bytes = 0;   // this step
  void note_bytes();             // updates the peak

  // Measurements of the step, reset by begin_step().
  double loss_sum = 0;
  std::vector<double> load;      // [chunk][layer][expert]
  std::int64_t expert_rows = 0;  // token copies this rank's expert slots processed
  std::mutex stats_mutex;
  void begin_step(int step_index);

  std::vector<float> scratch;    // weight-gradient scratch (compute stream only)

 private:
  std::mutex store_mutex_;
  std::map<std::pair<int, int>, std::unique_ptr<chunk_run>> store_;
};

}  // namespace loom::actors
