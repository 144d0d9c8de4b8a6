// The client's side of a submission: read the experiment file and every schedule file it needs
// (the schedule and its imports, found by compiling locally through a recording reader) from the
// client's disk, and name them relative to their common folder. The daemon gets contents only.
#pragma once

#include <string>
#include <vector>

#include "runtime/daemon/protocol.hpp"
#include "support/expected.hpp"

namespace loom::daemon {

// Builds the submission of `experiment_path` with `overrides` ("dotted.key=value"). Fails only when
// the client's own files cannot be read (the experiment, the schedule, an import); a file that reads
// but is wrong is sent as it is, for the daemon to refuse with its located error.
expected<submission> collect_submission(const std::string& experiment_path, const std::vector<std::string>& overrides);

}  // namespace loom::daemon
