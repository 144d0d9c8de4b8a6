// A schedule as JSON: name, parameters, pipelines, placement, per-rank canonical actions, recipes.
// What `loom compile --emit json` prints and what reports embed.
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/schedule/schedule.hpp"

namespace loom::report {

nlohmann::json schedule_json(const schedule::schedule& s);

}  // namespace loom::report
