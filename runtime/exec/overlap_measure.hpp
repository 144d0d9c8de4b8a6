// How much of a step's communication ran under computation, from the measured op times: the figure the
// DeepSeek-V3 overlap recipe is about. A comm op's busy time is its span less its wait for the peers
// (op_timing::wait_*: between its send half and its receive half nothing of it runs); the hidden part
// is the busy time that some compute op of the same rank covers.
#pragma once

#include "runtime/exec/run.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::exec {

struct comm_overlap {
  double busy_ms = 0;    // comm ops' busy time, every rank
  double wait_ms = 0;    // their waits for peers
  double hidden_ms = 0;  // busy time under the same rank's compute
  // The same, counting only the comm ops of overlapped forward-and-backward pairs (F&B actions).
  int pairs = 0;
  double pair_busy_ms = 0, pair_wait_ms = 0, pair_hidden_ms = 0;
  // The older, stricter reading: the whole span of a pair's comm ops, waits included, under compute.
  double pair_span_hidden_ms = 0;

  double hidden_fraction() const { return busy_ms > 0 ? hidden_ms / busy_ms : 0; }
  double pair_hidden_fraction() const { return pair_busy_ms > 0 ? pair_hidden_ms / pair_busy_ms : 0; }
  double pair_span_hidden_fraction() const {
    const double span = pair_busy_ms + pair_wait_ms;
    return span > 0 ? pair_span_hidden_ms / span : 0;
  }
};

comm_overlap measure_overlap(const schedule::schedule& s, const run_result& r, int step);

}  // namespace loom::exec
