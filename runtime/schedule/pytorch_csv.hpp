// Import and export of PyTorch pipelining's compute-only schedule CSV (what
// torch.distributed.pipelining's _PipelineScheduleRuntime loads and dumps with format="compute_only").
//
// One row per rank, comma-separated; each cell is one action `<stage><kind><microbatch>`: `0F1`
// (stage 0, forward, microbatch 1), `2B3` (full backward), `1I0` (backward for inputs), `1W0`
// (backward for weights); an empty cell is an idle step; an overlapped pair is
// `(0F7;7B3)OVERLAP_F_B` (forward first; loom also writes F&I and F&F pairs this way).
//
// PyTorch numbers stages globally, loom's actions name rank-local chunks, so both directions go
// through the placement: global stage = offset of the pipeline + stage, pipelines numbered one after
// the other (with DualPipe's two pipelines of S stages: global = pipeline_index * S + stage).
// Microbatch numbers stay those of the pipeline (PyTorch has one pipeline; with several, this is a
// loom convention that round-trips, not something PyTorch can run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/schedule/schedule.hpp"
#include "support/diagnostic.hpp"

namespace loom::schedule {

// Rows end with '\n' (PyTorch's csv.writer writes "\r\n"; the reader takes both). No empty cells:
// a loom program has no idle steps.
std::string format_pytorch_csv(const schedule& s);

struct csv_import_options {
  // The placement the global stage indices refer to. Empty: inferred. Each stage index must then
  // appear on exactly one rank; a rank's stages, ascending, become its local chunks 0, 1, ...; one
  // pipeline "main" with stages = largest stage + 1 and microbatches = largest microbatch + 1.
  // Given: pipelines (a microbatch count of 0 is inferred from the file) and placement[rank][chunk]
  // with one entry per row of the file; stages are numbered pipeline after pipeline as above.
  std::vector<pipeline> pipelines;
  std::vector<std::vector<stage_ref>> placement;
  std::string name = "pytorch_csv";  // the schedule's name
  // Skip communication and FSDP actions (SEND_F, RECV_B, UNSHARD, RESHARD, REDUCE_GRAD...) of a
  // "compute_comms" CSV instead of rejecting them; loom derives its own communication.
  bool ignore_comm_actions = false;
};

// Parses sources.file(file_id). Errors are located at the offending cell (file:line:col).
expected<schedule> parse_pytorch_csv(const source_set& sources, std::uint32_t file_id,
                                     const csv_import_options& options = {});

}  // namespace loom::schedule
