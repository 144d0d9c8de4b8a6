// The parser: tokens to a file_ast. On an error it reports it, skips to the next statement (a new
// line, ';' or '}') and goes on, so independent mistakes are reported together. Nesting deeper than
// the language limit is an error, not a stack overflow.
#pragma once

#include <vector>

#include "dsl/ast.hpp"
#include "dsl/token.hpp"
#include "support/diagnostic.hpp"

namespace loom::dsl {

file_ast parse(const std::vector<token>& tokens, diagnostic_list& diags);

}  // namespace loom::dsl
