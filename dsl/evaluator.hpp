// The evaluator: one schedule declaration plus parameter values to the Schedule IR.
//
// Names are checked before anything runs (an unknown name is reported wherever it appears, executed
// or not). Arithmetic is 64-bit and checked: overflow and division by zero are errors at the
// operator. Division rounds toward negative infinity and % takes the divisor's sign, so rank
// arithmetic like (r - 1) % ranks stays in range. Loops, steps and emitted actions are capped by
// runtime/schedule/limits.hpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsl/ast.hpp"
#include "support/diagnostic.hpp"

namespace loom::dsl {

struct evaluation_input {
  const schedule_decl* decl = nullptr;
  std::map<std::string, std::int64_t> params;  // overrides of the declared parameters
  std::vector<const schedule::overlap_recipe*> recipes;  // visible recipes (this file and imports)
  std::vector<const program_decl*> programs;              // visible programs (this file and imports)
  const experts_decl* file_experts = nullptr;            // a top-level experts block, if any
};

// Returns the schedule, or nothing with the reasons in `diags`.
std::optional<schedule::schedule> evaluate(const evaluation_input& in, diagnostic_list& diags);

}  // namespace loom::dsl
