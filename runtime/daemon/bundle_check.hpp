// The daemon's side of a submission: caps on sizes, safe file names, and validation of the
// experiment and its schedule exactly as `loom check` and `loom run` would, but through a reader
// that serves only the submitted files, so no file can make the daemon open a path of its choosing.
#pragma once

#include <string>
#include <vector>

#include "dsl/compile.hpp"
#include "runtime/daemon/protocol.hpp"
#include "runtime/exec/experiment.hpp"
#include "support/expected.hpp"

namespace loom::daemon {

// Sizes and counts within the caps of protocol.hpp, names safe to write under a folder (relative,
// no '.' or '..' parts, printable), no name twice, the main schedule among them.
expected<void> check_limits(const submission& s);

// Serves the bundle's files to the schedule compiler: a path is normalized lexically and must be one
// of the files' names; anything else (absolute, leading '..', not submitted) is refused.
dsl::file_reader bundle_reader(const submission& s);

struct validated_submission {
  exec::experiment experiment;  // as parsed (schedule paths relative to the bundle)
  std::string summary;          // "cpu-small: schedule 1f1b on 4 x 2 ranks, 8 microbatches, 4 steps"
};

// check_limits, then parses the experiment with the submission's overrides, compiles and validates
// its schedule through bundle_reader, and checks the experiment against the schedule. Errors carry
// the located messages `loom check` prints (file names as the client's files lie relative to each other).
expected<validated_submission> validate_submission(const submission& s);

// A submission's --procs and --hosts against the experiment's pp x ep ranks: procs is 0 (one
// process) or exactly one per rank, hosts at most procs and only with procs.
expected<void> check_processes(const submission& s, int pp, int ep);

// The overrides a run of the materialized submission needs: the client's, then schedule.file set to
// where the main schedule lies under `files_dir` (last, so it wins).
std::vector<std::string> run_overrides(const submission& s, const std::string& files_dir);

}  // namespace loom::daemon
