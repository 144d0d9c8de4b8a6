#include "dsl/parser.hpp"

#include <unordered_set>

#include "dsl/lexer.hpp"
#include "runtime/schedule/limits.hpp"

namespace loom::dsl {

namespace {

namespace limits = schedule::limits;

// Thrown only inside this file, to unwind out of a statement after an error; parse() catches it.
struct statement_error {};
// Thrown when nesting exceeds the limit: the rest of the file is not parsed.
struct fatal_error {};

class parser {
 public:
  parser(const std::vector<token>& t, diagnostic_list& d) : toks_(t), diags_(d) {}

  file_ast run() {
    file_ast file;
    try {
      while (peek().kind != tok::end && !diags_.full()) {
        try {
          top_level(file);
        } catch (const statement_error&) {
          recover();
        }
      }
    } catch (const fatal_error&) {
    }
    return file;
  }

 private:
  // --- token helpers ---------------------------------------------------------------------------
  const token& peek(std::size_t ahead = 0) const {
    std::size_t i = std::min(pos_ + ahead, toks_.size() - 1);
    return toks_[i];
  }
  const token& advance() {
    const token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool accept(tok k) {
    if (peek().kind != k) return false;
    advance();
    return true;
  }
  [[noreturn]] void fail(const token& at, std::string message) {
    if (at.kind != tok::error)  // the lexer already reported that one
      diags_.error(at.loc, std::move(message));
    throw statement_error{};
  }
  [[noreturn]] void fail_expected(const char* what) {
    const token& t = peek();
    std::string found = t.kind == tok::identifier || t.kind == tok::integer ? "'" + std::string(t.text) + "'"
                                                                             : std::string(describe(t.kind));
    fail(t, std::string("expected ") + what + ", found " + found);
  }
  const token& expect(tok k, const char* what) {
    if (peek().kind != k) fail_expected(what);
    return advance();
  }
  std::string identifier(const char* what) { return std::string(expect(tok::identifier, what).text); }

  // Skips to a token that can start the next statement: one that begins a line, or after ';', or a
  // '}' closing the enclosing block — skipping whole blocks opened on the way.
  void recover() {
    if (peek().kind == tok::end) return;
    int depth = 0;
    if (peek().kind == tok::lbrace) ++depth;
    advance();
    while (peek().kind != tok::end) {
      const tok k = peek().kind;
      if (depth == 0) {
        if (k == tok::semicolon) {
          advance();
          return;
        }
        if (peek().line_start || k == tok::rbrace) return;
      }
      if (k == tok::lbrace) ++depth;
      if (k == tok::rbrace) --depth;
      advance();
    }
  }

  struct depth_guard {
    parser& p;
    explicit depth_guard(parser& pp, const token& at) : p(pp) {
      if (++p.depth_ > limits::max_nesting) {
        p.diags_.limit_error(at.loc, "nesting is deeper than the limit of " + std::to_string(limits::max_nesting) +
                                         " (blocks and parentheses)");
        throw fatal_error{};
      }
    }
    ~depth_guard() { --p.depth_; }
  };

  // --- top level -------------------------------------------------------------------------------
  void top_level(file_ast& file) {
    const token& t = peek();
    switch (t.kind) {
      case tok::kw_import: {
        advance();
        const token& path = expect(tok::string, "a file name in quotes after 'import'");
        file.imports.push_back({string_value(path), t.loc});
        accept(tok::semicolon);
        return;
      }
      case tok::kw_schedule: file.schedules.push_back(schedule_block()); return;
      case tok::kw_program: file.programs.push_back(program_block()); return;
      case tok::kw_overlap: file.recipes.push_back(overlap_block()); return;
      case tok::kw_experts:
        if (file.experts) fail(t, "a file holds at most one 'experts' block");
        file.experts = experts_block();
        return;
      default:
        fail_expected("'schedule', 'program', 'overlap', 'experts' or 'import'");
    }
  }

  program_decl program_block() {
    program_decl p;
    p.loc = advance().loc;
    p.name = identifier("the program's name");
    expect(tok::lparen, "'(' and the program's parameters");
    std::unordered_set<std::string> seen;
    if (peek().kind != tok::rparen) {
      do {
        source_loc at = peek().loc;
        std::string name = param_name();
        if (!seen.insert(name).second) diags_.error(at, "parameter '" + name + "' is declared twice");
        p.params.push_back(name);
      } while (accept(tok::comma));
    }
    expect(tok::rparen, "')' after the parameters");
    p.body = braced_block();
    return p;
  }

  schedule_decl schedule_block() {
    schedule_decl s;
    s.loc = advance().loc;
    s.name = identifier("the schedule's name");
    expect(tok::lparen, "'(' and the schedule's parameters");
    std::unordered_set<std::string> seen;
    if (peek().kind != tok::rparen) {
      do {
        param_decl p;
        p.loc = peek().loc;
        p.name = param_name();
        if (accept(tok::assign)) p.default_value = expression();
        if (!seen.insert(p.name).second) diags_.error(p.loc, "parameter '" + p.name + "' is declared twice");
        s.params.push_back(std::move(p));
      } while (accept(tok::comma));
    }
    expect(tok::rparen, "')' after the parameters");
    pipeline_names_.clear();
    const token& open = expect(tok::lbrace, "'{' to open the schedule");
    depth_guard guard(*this, open);
    while (peek().kind != tok::rbrace && peek().kind != tok::end && !diags_.full()) {
      try {
        schedule_item(s);
      } catch (const statement_error&) {
        recover();
      }
    }
    expect(tok::rbrace, "'}' to close the schedule");
    if (s.rank_var.empty()) diags_.error(s.loc, "schedule '" + s.name + "' has no 'rank r { ... }' program");
    return s;
  }

  // Parameter names may be the keywords that double as names (`microbatches`, `stages`).
  std::string param_name() {
    const token& t = peek();
    if (t.kind == tok::identifier || t.kind == tok::kw_microbatches || t.kind == tok::kw_stages)
      return std::string(advance().text);
    fail_expected("a parameter name");
  }

  void schedule_item(schedule_decl& s) {
    const token& t = peek();
    switch (t.kind) {
      case tok::kw_require:
      case tok::kw_let: s.requires_.push_back(statement()); return;
      case tok::kw_pipeline: {
        advance();
        pipeline_decl p;
        p.loc = t.loc;
        p.name = identifier("the pipeline's name");
        expect(tok::kw_stages, "'stages = N'");
        expect(tok::assign, "'=' after 'stages'");
        p.stages = expression();
        if (accept(tok::kw_microbatches)) {
          expect(tok::assign, "'=' after 'microbatches'");
          p.microbatches = expression();
        }
        if (!pipeline_names_.insert(p.name).second) diags_.error(p.loc, "pipeline '" + p.name + "' is declared twice");
        s.pipelines.push_back(std::move(p));
        accept(tok::semicolon);
        return;
      }
      case tok::kw_place: {
        advance();
        if (s.place) fail(t, "a schedule has one 'place' block");
        place_decl p;
        p.loc = t.loc;
        expect(tok::kw_rank, "'rank' after 'place'");
        p.rank_var = identifier("a name for the rank, as in 'place rank r { ... }'");
        in_place_ = true;
        p.body = braced_block();
        in_place_ = false;
        s.place = std::move(p);
        return;
      }
      case tok::kw_rank: {
        advance();
        if (!s.rank_var.empty()) fail(t, "a schedule has one 'rank' program");
        s.rank_loc = t.loc;
        s.rank_var = identifier("a name for the rank, as in 'rank r { ... }'");
        s.rank_body = braced_block();
        return;
      }
      case tok::kw_overlap: {
        advance();
        s.overlaps.push_back({identifier("the name of an overlap recipe"), t.loc});
        accept(tok::semicolon);
        return;
      }
      case tok::kw_experts:
        if (s.experts) fail(t, "a schedule holds at most one 'experts' block");
        s.experts = experts_block();
        return;
      default:
        fail_expected("'require', 'let', 'pipeline', 'place', 'rank', 'overlap' or 'experts'");
    }
  }

  schedule::overlap_recipe overlap_block() {
    schedule::overlap_recipe r;
    r.where = advance().loc;
    r.name = identifier("the recipe's name");
    const token& open = expect(tok::lbrace, "'{'");
    depth_guard guard(*this, open);
    while (peek().kind != tok::rbrace && peek().kind != tok::end) {
      try {
        schedule::recipe_stream st;
        st.where = expect(tok::kw_stream, "'stream NAME { ... }'").loc;
        st.name = identifier("the stream's name (compute or comm)");
        if (accept(tok::lparen)) {
          const token& key = expect(tok::identifier, "'sms'");
          if (key.text != "sms") fail(key, "the only stream option is 'sms' (its SM budget)");
          expect(tok::assign, "'='");
          const token& v = expect(tok::integer, "a number of SMs");
          if (v.value < 1 || v.value > 1024) fail(v, "sms must be between 1 and 1024");
          st.sms = static_cast<int>(v.value);
          expect(tok::rparen, "')'");
        }
        const token& inner = expect(tok::lbrace, "'{' and the stream's components");
        depth_guard g2(*this, inner);
        while (peek().kind != tok::rbrace && peek().kind != tok::end) st.order.push_back(recipe_item());
        expect(tok::rbrace, "'}'");
        r.streams.push_back(std::move(st));
      } catch (const statement_error&) {
        recover();
      }
    }
    expect(tok::rbrace, "'}' to close the recipe");
    return r;
  }

  schedule::recipe_item recipe_item() {
    schedule::recipe_item item;
    const token& side = peek();
    item.where = side.loc;
    if (side.kind != tok::identifier || (side.text != "f" && side.text != "b" && side.text != "f2"))
      fail_expected("a component such as f.attn, b.mlp, b.mlp.w or f2.dispatch");
    advance();
    item.side = side.text == "b" ? schedule::pair_side::b : side.text == "f2" ? schedule::pair_side::f2 : schedule::pair_side::f;
    expect(tok::dot, "'.' after f, b or f2");
    const token& part = expect(tok::identifier, "attn, dispatch, mlp or combine");
    if (part.text == "attn") item.part = schedule::component::attn;
    else if (part.text == "dispatch") item.part = schedule::component::dispatch;
    else if (part.text == "mlp") item.part = schedule::component::mlp;
    else if (part.text == "combine") item.part = schedule::component::combine;
    else fail(part, "unknown component '" + std::string(part.text) + "' (expected attn, dispatch, mlp or combine)");
    if (peek().kind == tok::dot) {
      advance();
      const token& w = expect(tok::identifier, "'w' (the weight-gradient part)");
      if (w.text != "w") fail(w, "expected 'w' (the weight-gradient part)");
      item.weight = true;
    }
    return item;
  }

  experts_decl experts_block() {
    experts_decl e;
    e.loc = advance().loc;
    const token& open = expect(tok::lbrace, "'{'");
    depth_guard guard(*this, open);
    while (peek().kind != tok::rbrace && peek().kind != tok::end) {
      try {
        experts_decl::entry en;
        en.loc = peek().loc;
        en.key = identifier("a setting: redundant, replan_every, window or planner");
        expect(tok::assign, "'='");
        if (en.key == "planner") en.word = identifier("a planner name (hierarchical or global)");
        else en.value = expression();
        accept(tok::semicolon);
        e.entries.push_back(std::move(en));
      } catch (const statement_error&) {
        recover();
      }
    }
    expect(tok::rbrace, "'}' to close 'experts'");
    return e;
  }

  // --- statements ------------------------------------------------------------------------------
  block braced_block() {
    const token& open = expect(tok::lbrace, "'{'");
    depth_guard guard(*this, open);
    block body;
    while (peek().kind != tok::rbrace && peek().kind != tok::end && !diags_.full()) {
      try {
        body.push_back(statement());
      } catch (const statement_error&) {
        recover();
      }
    }
    expect(tok::rbrace, "'}'");
    return body;
  }

  std::unique_ptr<stmt> statement() {
    auto s = std::make_unique<stmt>();
    const token& t = peek();
    s->loc = t.loc;
    switch (t.kind) {
      case tok::kw_let:
        advance();
        s->k = stmt::kind::let;
        s->name = identifier("a name after 'let'");
        expect(tok::assign, "'=' after the name");
        s->value = expression();
        break;
      case tok::kw_require:
        advance();
        s->k = stmt::kind::require;
        s->value = expression();
        if (accept(tok::comma) || accept(tok::colon)) s->message = string_value(expect(tok::string, "a message in quotes"));
        break;
      case tok::kw_if:
        advance();
        s->k = stmt::kind::if_;
        s->value = expression();
        s->body = braced_block();
        if (accept(tok::kw_else)) {
          if (peek().kind == tok::kw_if) {
            depth_guard guard(*this, peek());
            s->else_body.push_back(statement());
          } else {
            s->else_body = braced_block();
          }
        }
        break;
      case tok::kw_for:
        advance();
        s->k = stmt::kind::for_;
        s->name = identifier("a loop variable after 'for'");
        expect(tok::kw_in, "'in' after the loop variable");
        s->value = expression();
        expect(tok::dotdot, "'..' between the loop bounds (the end is excluded)");
        s->end = expression();
        s->body = braced_block();
        break;
      case tok::kw_repeat:
        advance();
        s->k = stmt::kind::repeat;
        s->value = expression();
        s->body = braced_block();
        break;
      case tok::lbrace:
        s->k = stmt::kind::nested;
        s->body = braced_block();
        break;
      case tok::kw_chunk:
        if (!in_place_) fail(t, "'chunk' assignments belong in a 'place' block");
        advance();
        s->k = stmt::kind::place;
        s->value = expression();
        expect(tok::assign, "'=' after the chunk number");
        s->name = identifier("a pipeline name");
        expect(tok::lbracket, "'[' and a stage number");
        s->end = expression();
        expect(tok::rbracket, "']'");
        break;
      case tok::identifier:
        if (peek(1).kind != tok::lparen) fail_expected("a statement (F, B, I, W, let, if, for, repeat, require)");
        advance();
        s->k = stmt::kind::call;
        s->name = std::string(t.text);
        advance();
        if (peek().kind != tok::rparen) {
          do s->args.push_back(expression());
          while (accept(tok::comma));
        }
        expect(tok::rparen, "')' to close the call");
        break;
      case tok::act_F:
      case tok::act_B:
      case tok::act_I:
      case tok::act_W:
        if (in_place_) fail(t, "actions belong in the 'rank' program, not in 'place'");
        s->k = stmt::kind::action;
        s->first = step();
        if (accept(tok::amp)) s->second = step();
        break;
      default:
        fail_expected("a statement (F, B, I, W, let, if, for, repeat, require)");
    }
    accept(tok::semicolon);
    return s;
  }

  step_expr step() {
    step_expr st;
    const token& t = advance();
    st.loc = t.loc;
    st.kind = t.kind == tok::act_F ? schedule::phase::F
              : t.kind == tok::act_B ? schedule::phase::B
              : t.kind == tok::act_I ? schedule::phase::I
                                      : schedule::phase::W;
    if (st.kind == schedule::phase::W && !starts_expression(peek())) return st;
    st.chunk = expression();
    if (accept(tok::dot)) st.microbatch = expression();
    return st;
  }

  // --- expressions -----------------------------------------------------------------------------
  static bool starts_expression(const token& t) {
    switch (t.kind) {
      case tok::integer:
      case tok::identifier:
      case tok::lparen:
      case tok::minus:
      case tok::bang:
      case tok::kw_true:
      case tok::kw_false:
      case tok::kw_microbatches:
      case tok::kw_stages: return !t.line_start;
      default: return false;
    }
  }

  expr_ptr expression() {
    depth_guard guard(*this, peek());
    return logical_or();
  }

  // A binary node; chains like 1+1+...+1 grow the tree without nesting brackets, so their height is
  // capped here too (the checker and evaluator recurse over it).
  expr_ptr make_binary(binary_op op, source_loc loc, expr_ptr a, expr_ptr b) {
    const int depth = std::max(a->depth, b->depth) + 1;
    if (depth > limits::max_expression_depth) {
      diags_.limit_error(loc, "expression is nested more than " + std::to_string(limits::max_expression_depth) +
                                  " operators deep; split it with 'let'");
      throw fatal_error{};
    }
    auto e = std::make_unique<expr>();
    e->depth = depth;
    e->k = expr::kind::binary;
    e->bop = op;
    e->loc = loc;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  expr_ptr logical_or() {
    auto e = logical_and();
    while (peek().kind == tok::pipepipe) {
      source_loc loc = advance().loc;
      e = make_binary(binary_op::logical_or, loc, std::move(e), logical_and());
    }
    return e;
  }
  expr_ptr logical_and() {
    auto e = comparison();
    while (peek().kind == tok::ampamp) {
      source_loc loc = advance().loc;
      e = make_binary(binary_op::logical_and, loc, std::move(e), comparison());
    }
    return e;
  }
  expr_ptr comparison() {
    auto e = additive();
    for (;;) {
      binary_op op;
      switch (peek().kind) {
        case tok::eq: op = binary_op::eq; break;
        case tok::ne: op = binary_op::ne; break;
        case tok::lt: op = binary_op::lt; break;
        case tok::le: op = binary_op::le; break;
        case tok::gt: op = binary_op::gt; break;
        case tok::ge: op = binary_op::ge; break;
        default: return e;
      }
      source_loc loc = advance().loc;
      e = make_binary(op, loc, std::move(e), additive());
    }
  }
  expr_ptr additive() {
    auto e = multiplicative();
    while (peek().kind == tok::plus || (peek().kind == tok::minus && !peek().line_start)) {
      binary_op op = peek().kind == tok::plus ? binary_op::add : binary_op::sub;
      source_loc loc = advance().loc;
      e = make_binary(op, loc, std::move(e), multiplicative());
    }
    return e;
  }
  expr_ptr multiplicative() {
    auto e = unary();
    for (;;) {
      binary_op op;
      switch (peek().kind) {
        case tok::star: op = binary_op::mul; break;
        case tok::slash: op = binary_op::div; break;
        case tok::percent: op = binary_op::mod; break;
        default: return e;
      }
      source_loc loc = advance().loc;
      e = make_binary(op, loc, std::move(e), unary());
    }
  }
  expr_ptr unary() {
    if (peek().kind == tok::minus || peek().kind == tok::bang) {
      const token& t = advance();
      depth_guard guard(*this, t);
      auto e = std::make_unique<expr>();
      e->k = expr::kind::unary;
      e->loc = t.loc;
      e->uop = t.kind == tok::minus ? unary_op::negate : unary_op::logical_not;
      e->args.push_back(unary());
      e->depth = e->args.back()->depth + 1;
      return e;
    }
    return primary();
  }
  expr_ptr primary() {
    const token& t = peek();
    auto e = std::make_unique<expr>();
    e->loc = t.loc;
    switch (t.kind) {
      case tok::integer:
        advance();
        e->value = t.value;
        return e;
      case tok::kw_true:
      case tok::kw_false:
        advance();
        e->value = t.kind == tok::kw_true;
        return e;
      case tok::identifier:
      case tok::kw_microbatches:
      case tok::kw_stages:
        advance();
        e->name = std::string(t.text);
        if (t.kind == tok::identifier && peek().kind == tok::lparen) {
          advance();
          e->k = expr::kind::call;
          if (peek().kind != tok::rparen) {
            do e->args.push_back(expression());
            while (accept(tok::comma));
          }
          expect(tok::rparen, "')' to close the call");
          for (const auto& a : e->args) e->depth = std::max(e->depth, a->depth + 1);
          return e;
        }
        e->k = expr::kind::name;
        return e;
      case tok::lparen: {
        advance();  // expression() counts the nesting level
        auto inner = expression();
        expect(tok::rparen, "')'");
        return inner;
      }
      default:
        fail_expected("an expression");
    }
  }

  const std::vector<token>& toks_;
  diagnostic_list& diags_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  bool in_place_ = false;
  std::unordered_set<std::string> pipeline_names_;  // of the schedule being parsed
};

}  // namespace

file_ast parse(const std::vector<token>& tokens, diagnostic_list& diags) { return parser(tokens, diags).run(); }

}  // namespace loom::dsl
