// The syntax tree of the schedule language.
//
// A file holds imports, schedules, overlap recipes and expert-placement blocks. Expressions are
// 64-bit integers (booleans are 0 and 1). Names are resolved by the evaluator, which reports unknown
// ones with their location.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/schedule/schedule.hpp"
#include "support/source.hpp"

namespace loom::dsl {

struct expr;
using expr_ptr = std::unique_ptr<expr>;

enum class binary_op { add, sub, mul, div, mod, eq, ne, lt, le, gt, ge, logical_and, logical_or };
enum class unary_op { negate, logical_not };

struct expr {
  enum class kind { integer, name, unary, binary, call } k = kind::integer;
  source_loc loc;
  std::int64_t value = 0;          // integer
  std::string name;                // name, call (function name)
  unary_op uop = unary_op::negate;
  binary_op bop = binary_op::add;
  std::vector<expr_ptr> args;      // unary: 1, binary: 2, call: any
  int depth = 1;                   // height of this subtree (bounded by the parser)
  mutable int slot = -1;           // name: its position in the environment, resolved by the checker
};

struct stmt;
using block = std::vector<std::unique_ptr<stmt>>;

// One step of an action statement: `F 0`, `B c.m`, `W`, `W 1`.
struct step_expr {
  schedule::phase kind = schedule::phase::F;
  expr_ptr chunk;       // null only for a bare `W`
  expr_ptr microbatch;  // null: the next one (counter)
  source_loc loc;
};

struct stmt {
  // place: `chunk C = pipeline[S]` (only in a place block); call: `NAME(args)` runs a program.
  enum class kind { let, require, if_, for_, repeat, action, nested, place, call } k = kind::action;
  source_loc loc;
  std::string name;       // let, for (loop variable), place (pipeline), call (program)
  expr_ptr value;         // let value, require/if condition, repeat count, for begin, place chunk
  expr_ptr end;           // for end (exclusive), place stage
  std::vector<expr_ptr> args;  // call
  std::string message;    // require
  block body;             // if-then, for, repeat, nested
  block else_body;        // if
  step_expr first;        // action
  std::optional<step_expr> second;  // action: overlapped pair
};

struct param_decl {
  std::string name;
  expr_ptr default_value;  // may be null (required)
  source_loc loc;
};

struct pipeline_decl {
  std::string name;
  expr_ptr stages;
  expr_ptr microbatches;  // null: the schedule's `microbatches`
  source_loc loc;
};

struct place_decl {
  std::string rank_var;
  block body;  // `chunk C = pipeline[S]` statements, with let / if / for around them
  source_loc loc;
};

// `program NAME(a, b) { ... }`: a named piece of a rank program, run by `NAME(x, y)` inside one.
// It sees its parameters only, and shares the calling rank's counters.
struct program_decl {
  std::string name;
  std::vector<std::string> params;
  block body;
  source_loc loc;
};

struct experts_decl {
  struct entry {
    std::string key;
    expr_ptr value;       // for numeric keys
    std::string word;     // for `planner = hierarchical`
    source_loc loc;
  };
  std::vector<entry> entries;
  source_loc loc;
};

struct schedule_decl {
  std::string name;
  std::vector<param_decl> params;
  std::vector<std::unique_ptr<stmt>> requires_;  // schedule-level `require` and `let`, in order
  std::vector<pipeline_decl> pipelines;
  std::optional<place_decl> place;
  std::string rank_var;
  block rank_body;
  source_loc rank_loc;
  struct overlap_use {
    std::string name;  // `overlap NAME` inside the schedule: the recipe its pairs follow
    source_loc loc;
  };
  std::vector<overlap_use> overlaps;  // at most one for F&B pairs and one for F&F pairs
  std::optional<experts_decl> experts;
  source_loc loc;
};

struct import_decl {
  std::string path;
  source_loc loc;
};

struct file_ast {
  std::vector<import_decl> imports;
  std::vector<schedule_decl> schedules;
  std::vector<program_decl> programs;
  std::vector<schedule::overlap_recipe> recipes;  // fully parsed already: they hold no expressions
  std::optional<experts_decl> experts;
};

}  // namespace loom::dsl
