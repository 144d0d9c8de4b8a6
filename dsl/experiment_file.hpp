// Experiment files (TOML). The loader reports toml11's located errors, rejects unknown keys with
// their position, and applies --set overrides (dotted keys: model.hidden=128, schedule.file=x.sched)
// before anything is checked. Checks that need the compiled schedule (stages dividing the layers,
// pp matching the schedule's ranks) come later, in exec::prepare.
#pragma once

#include <string>
#include <vector>

#include "runtime/exec/experiment.hpp"
#include "support/expected.hpp"

namespace loom::dsl {

// Reads an experiment from disk. `overrides` are "dotted.key=value" strings; a value that is not a
// TOML value (a bare word or path) is taken as a string.
expected<exec::experiment> load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from text already in memory (the daemon's submitted files); `path` names it in messages
// and relative schedule paths resolve against `base_dir`.
expected<exec::experiment> parse_experiment(const std::string& text, const std::string& path, const std::string& base_dir,
                                            const std::vector<std::string>& overrides = {});

}  // namespace loom::dsl
