// The lexer: source text to tokens. Comments are `// ...` and `/* ... */`; integers are decimal and
// must fit in 64 bits; strings are "..." with \" and \\ escapes and no newlines. Bytes outside
// printable ASCII are reported once per run of them, with their position.
#pragma once

#include <vector>

#include "dsl/token.hpp"
#include "support/diagnostic.hpp"

namespace loom::dsl {

// Tokenizes sources.file(file_id); the last token is tok::end. Errors go to diags.
std::vector<token> lex(const source_set& sources, std::uint32_t file_id, diagnostic_list& diags);

// The value of a string literal token (escapes resolved).
std::string string_value(const token& t);

}  // namespace loom::dsl
