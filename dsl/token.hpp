// Tokens of the schedule language.
#pragma once

#include <cstdint>
#include <string_view>

#include "support/source.hpp"

namespace loom::dsl {

enum class tok : std::uint8_t {
  end,
  error,  // a byte the lexer could not use; the lexer has reported it
  identifier,
  integer,
  string,
  // keywords
  kw_schedule, kw_import, kw_require, kw_let, kw_if, kw_else, kw_for, kw_in, kw_repeat, kw_pipeline,
  kw_stages, kw_microbatches, kw_place, kw_rank, kw_chunk, kw_overlap, kw_stream, kw_experts,
  kw_true, kw_false, kw_program,
  // actions
  act_F, act_B, act_I, act_W,
  // punctuation and operators
  lparen, rparen, lbrace, rbrace, lbracket, rbracket, comma, semicolon, dot, dotdot, assign,
  plus, minus, star, slash, percent, amp, ampamp, pipepipe, bang, eq, ne, lt, le, gt, ge, colon,
};

const char* describe(tok t);  // for messages: "'{'", "an identifier", "end of file"

struct token {
  tok kind = tok::end;
  std::string_view text;  // a view into the source file's text
  source_loc loc;
  bool line_start = false;  // first token on its line (used to resynchronise after an error)
  std::int64_t value = 0;   // for integers
};

}  // namespace loom::dsl
