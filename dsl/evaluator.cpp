#include "dsl/evaluator.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <set>
#include <unordered_map>

#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/recipe.hpp"

namespace loom::dsl {

namespace {

namespace limits = schedule::limits;
using schedule::phase;

// Raised inside the evaluator to abandon the current rank (or the schedule header) after an error
// has been reported; caught in this file only.
struct evaluation_stopped {};

// ---- static name check ------------------------------------------------------------------------

class name_checker {
 public:
  name_checker(diagnostic_list& d, const std::vector<const program_decl*>& programs) : diags_(d) {
    for (const auto* p : programs) programs_.emplace(p->name, p);
  }

  // The scope mirrors the evaluator's environment exactly, so a name's position here is its slot there.
  void push(const std::string& name) {
    index_[name].push_back(static_cast<int>(scope_.size()));
    scope_.push_back(name);
  }
  std::size_t mark() const { return scope_.size(); }
  void pop_to(std::size_t m) {
    while (scope_.size() > m) {
      auto it = index_.find(scope_.back());
      it->second.pop_back();
      if (it->second.empty()) index_.erase(it);
      scope_.pop_back();
    }
  }

  void check(const expr& e) {
    switch (e.k) {
      case expr::kind::integer: return;
      case expr::kind::name: {
        auto it = index_.find(e.name);
        if (it == index_.end()) diags_.error(e.loc, "unknown name '" + e.name + "'" + suggestion(e.name));
        else e.slot = it->second.back();
        return;
      }
      case expr::kind::call:
        if (e.name != "min" && e.name != "max" && e.name != "abs" && e.name != "deferred")
          diags_.error(e.loc, "unknown function '" + e.name + "' (available: min, max, abs, deferred)");
        else if (e.name == "deferred" && !e.args.empty())
          diags_.error(e.loc, "deferred() takes no argument");
        else if (e.name == "abs" && e.args.size() != 1)
          diags_.error(e.loc, "abs takes one argument");
        else if ((e.name == "min" || e.name == "max") && e.args.empty())
          diags_.error(e.loc, e.name + " takes at least one argument");
        for (const auto& a : e.args) check(*a);
        return;
      default:
        for (const auto& a : e.args) check(*a);
    }
  }

  void check(const block& b) {
    std::size_t m = mark();
    for (const auto& s : b) check(*s);
    pop_to(m);
  }

  void check(const stmt& s) {
    switch (s.k) {
      case stmt::kind::let:
        check(*s.value);
        push(s.name);
        return;
      case stmt::kind::require:
      case stmt::kind::repeat:
        check(*s.value);
        check(s.body);
        return;
      case stmt::kind::if_:
        check(*s.value);
        check(s.body);
        check(s.else_body);
        return;
      case stmt::kind::for_: {
        check(*s.value);
        check(*s.end);
        std::size_t m = mark();
        push(s.name);
        check(s.body);
        pop_to(m);
        return;
      }
      case stmt::kind::nested: check(s.body); return;
      case stmt::kind::place:
        check(*s.value);
        check(*s.end);
        return;
      case stmt::kind::call: {
        for (const auto& a : s.args) check(*a);
        auto it = programs_.find(s.name);
        if (it == programs_.end())
          diags_.error(s.loc, "unknown program '" + s.name + "' (define it with 'program " + s.name + "(...) { ... }' or import it)");
        else if (it->second->params.size() != s.args.size())
          diags_.error(s.loc, "program '" + s.name + "' takes " + std::to_string(it->second->params.size()) + " arguments, not " +
                                  std::to_string(s.args.size()));
        return;
      }
      case stmt::kind::action:
        check_step(s.first);
        if (s.second) check_step(*s.second);
        return;
    }
  }

 private:
  void check_step(const step_expr& st) {
    if (st.chunk) check(*st.chunk);
    if (st.microbatch) check(*st.microbatch);
  }
  // A name in scope within two edits of the unknown one (or containing it), nearest first.
  std::string suggestion(const std::string& name) const {
    std::string best;
    std::size_t best_distance = 3;
    for (const auto& [candidate, slots] : index_) {
      std::size_t d = edit_distance(name, candidate);
      if (candidate.size() > 2 && (candidate.find(name) != std::string::npos || name.find(candidate) != std::string::npos))
        d = std::min<std::size_t>(d, 2);
      if (d < best_distance || (d == best_distance && !best.empty() && candidate < best)) {
        best_distance = d;
        best = candidate;
      }
    }
    return best.empty() ? "" : " (did you mean '" + best + "'?)";
  }
  static std::size_t edit_distance(const std::string& a, const std::string& b) {
    if (a.size() > 64 || b.size() > 64) return 99;
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  }
  std::vector<std::string> scope_;
  std::unordered_map<std::string, std::vector<int>> index_;
  diagnostic_list& diags_;
  std::unordered_map<std::string, const program_decl*> programs_;
};

// ---- evaluation -------------------------------------------------------------------------------

struct binding {
  std::string name;
  std::int64_t value;
};

class evaluator {
 public:
  evaluator(diagnostic_list& d, std::size_t& steps) : diags_(d), steps_(steps) {}

  std::vector<binding> env;
  std::function<std::int64_t()> deferred_count;  // set while a rank program runs: `deferred()`

  [[noreturn]] void fail(source_loc loc, std::string message) {
    diags_.error(loc, std::move(message));
    throw evaluation_stopped{};
  }

  [[noreturn]] void fail_limit(source_loc loc, std::string message) {
    diags_.limit_error(loc, std::move(message));
    throw evaluation_stopped{};
  }

  void tick(source_loc loc) {
    if (++steps_ > limits::max_eval_steps)
      fail_limit(loc, "evaluation takes more than " + std::to_string(limits::max_eval_steps) +
                          " steps; the language caps it so no schedule can hang the checker");
  }

  // The checker resolved every name to its slot in the environment.
  std::int64_t lookup(const expr& e) {
    if (e.slot < 0 || e.slot >= static_cast<int>(env.size())) fail(e.loc, "internal: name '" + e.name + "' was not resolved");
    return env[e.slot].value;
  }

  std::int64_t eval(const expr& e) {
    switch (e.k) {
      case expr::kind::integer: return e.value;
      case expr::kind::name: return lookup(e);
      case expr::kind::unary: {
        std::int64_t v = eval(*e.args[0]);
        if (e.uop == unary_op::logical_not) return v == 0;
        if (v == INT64_MIN) fail(e.loc, "integer overflow in negation");
        return -v;
      }
      case expr::kind::call: {
        std::vector<std::int64_t> v;
        for (const auto& a : e.args) v.push_back(eval(*a));
        if (e.name == "deferred") {
          if (!deferred_count) fail(e.loc, "deferred() counts a rank's pending W: it works only inside a rank program");
          return deferred_count();
        }
        if (e.name == "abs") {
          if (v[0] == INT64_MIN) fail(e.loc, "integer overflow in abs");
          return v[0] < 0 ? -v[0] : v[0];
        }
        return e.name == "min" ? *std::min_element(v.begin(), v.end()) : *std::max_element(v.begin(), v.end());
      }
      case expr::kind::binary: break;
    }
    // && and || evaluate their right side only when needed.
    if (e.bop == binary_op::logical_and) return eval(*e.args[0]) != 0 && eval(*e.args[1]) != 0;
    if (e.bop == binary_op::logical_or) return eval(*e.args[0]) != 0 || eval(*e.args[1]) != 0;
    std::int64_t a = eval(*e.args[0]);
    std::int64_t b = eval(*e.args[1]);
    std::int64_t r = 0;
    switch (e.bop) {
      case binary_op::add:
        if (__builtin_add_overflow(a, b, &r)) fail(e.loc, "integer overflow in " + std::to_string(a) + " + " + std::to_string(b));
        return r;
      case binary_op::sub:
        if (__builtin_sub_overflow(a, b, &r)) fail(e.loc, "integer overflow in " + std::to_string(a) + " - " + std::to_string(b));
        return r;
      case binary_op::mul:
        if (__builtin_mul_overflow(a, b, &r)) fail(e.loc, "integer overflow in " + std::to_string(a) + " * " + std::to_string(b));
        return r;
      case binary_op::div:
      case binary_op::mod: {
        if (b == 0) fail(e.loc, std::string(e.bop == binary_op::div ? "division" : "remainder") + " by zero");
        if (a == INT64_MIN && b == -1) fail(e.loc, "integer overflow in division");
        std::int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {  // floor, and a remainder with the divisor's sign
          --q;
          m += b;
        }
        return e.bop == binary_op::div ? q : m;
      }
      case binary_op::eq: return a == b;
      case binary_op::ne: return a != b;
      case binary_op::lt: return a < b;
      case binary_op::le: return a <= b;
      case binary_op::gt: return a > b;
      case binary_op::ge: return a >= b;
      default: return 0;
    }
  }

  std::size_t params = 0;  // the first bindings are the schedule's parameters

  std::string context() const {
    std::string out;
    for (std::size_t i = 0; i < params && i < env.size(); ++i)
      out += (out.empty() ? "" : ", ") + env[i].name + "=" + std::to_string(env[i].value);
    return out;
  }

  // Runs a schedule-level or rank-level `require`.
  void require(const stmt& s, const std::string& where) {
    if (eval(*s.value) != 0) return;
    std::string msg = s.message.empty() ? "requirement not met" : s.message;
    fail(s.loc, msg + where + " (with " + context() + ")");
  }

 private:
  diagnostic_list& diags_;
  std::size_t& steps_;
};

// Runs statements: the control flow shared by rank programs and place blocks. What a leaf
// statement (an action, a chunk placement) does is the subclass's business.
class statement_runner {
 public:
  statement_runner(evaluator& ev, const std::vector<const program_decl*>& programs) : ev_(ev), programs_(programs) {}
  virtual ~statement_runner() = default;

  void run(const block& b) {
    std::size_t m = ev_.env.size();
    for (const auto& s : b) run(*s);
    ev_.env.resize(m);
  }

 protected:
  virtual void on_action(const stmt& s) = 0;
  virtual void on_place(const stmt& s) = 0;
  virtual std::string where() const = 0;

  void run(const stmt& s) {
    ev_.tick(s.loc);
    switch (s.k) {
      case stmt::kind::let: ev_.env.push_back({s.name, ev_.eval(*s.value)}); return;
      case stmt::kind::require: ev_.require(s, where()); return;
      case stmt::kind::if_:
        if (ev_.eval(*s.value) != 0) run(s.body);
        else run(s.else_body);
        return;
      case stmt::kind::repeat: {
        std::int64_t n = ev_.eval(*s.value);
        if (n < 0) ev_.fail(s.value->loc, "repeat count is negative (" + std::to_string(n) + ")");
        check_trips(n, s.value->loc);
        for (std::int64_t i = 0; i < n; ++i) {
          ev_.tick(s.loc);
          run(s.body);
        }
        return;
      }
      case stmt::kind::for_: {
        std::int64_t begin = ev_.eval(*s.value), end = ev_.eval(*s.end), trips = 0;
        if (end > begin && __builtin_sub_overflow(end, begin, &trips)) trips = INT64_MAX;
        if (end > begin) check_trips(trips, s.value->loc);
        for (std::int64_t i = begin; i < end; ++i) {
          ev_.tick(s.loc);
          ev_.env.push_back({s.name, i});
          run(s.body);
          ev_.env.pop_back();
        }
        return;
      }
      case stmt::kind::nested: run(s.body); return;
      case stmt::kind::action: on_action(s); return;
      case stmt::kind::place: on_place(s); return;
      case stmt::kind::call: call(s); return;
    }
  }

  // A program runs with its parameters as its only names, on this rank's counters.
  void call(const stmt& s) {
    const program_decl* p = nullptr;
    for (const auto* candidate : programs_)
      if (candidate->name == s.name) p = candidate;
    if (!p) ev_.fail(s.loc, "unknown program '" + s.name + "'");
    if (++call_depth_ > limits::max_nesting)
      ev_.fail_limit(s.loc, "programs call each other deeper than " + std::to_string(limits::max_nesting) + " levels");
    std::vector<binding> args;
    for (std::size_t i = 0; i < s.args.size(); ++i) args.push_back({p->params[i], ev_.eval(*s.args[i])});
    std::vector<binding> saved = std::move(ev_.env);
    ev_.env = std::move(args);
    run(p->body);
    ev_.env = std::move(saved);
    --call_depth_;
  }

  void check_trips(std::int64_t n, source_loc loc) {
    if (n > limits::max_loop_trips)
      ev_.fail_limit(loc, "loop would run " + std::to_string(n) + " times; the limit is " + std::to_string(limits::max_loop_trips));
  }

  evaluator& ev_;

 private:
  const std::vector<const program_decl*>& programs_;
  int call_depth_ = 0;
};

// "The next microbatch" of a chunk: the lowest one not issued yet, without memory for all of them.
class microbatch_counter {
 public:
  explicit microbatch_counter(int limit) : limit_(limit) {}
  int limit() const { return limit_; }
  // The lowest microbatch not issued yet, or -1 when all are.
  int take() {
    while (!ahead_.empty() && *ahead_.begin() == next_) {
      ahead_.erase(ahead_.begin());
      ++next_;
    }
    return next_ < limit_ ? next_++ : -1;
  }
  void mark(int m) {
    if (m >= next_) ahead_.insert(m);
  }

 private:
  int limit_;
  int next_ = 0;
  std::set<int> ahead_;  // issued by explicit index above `next_`
};

// A rank's program: the counters behind `F c` / `B c` / `W`, and the actions it emits.
class rank_program final : public statement_runner {
 public:
  rank_program(evaluator& ev, const std::vector<const program_decl*>& programs, const schedule::schedule& s, int rank,
               std::size_t& total_actions)
      : statement_runner(ev, programs), rank_(rank), total_actions_(total_actions) {
    for (const auto& ref : s.placement[rank]) {
      int mbs = s.pipelines[ref.pipeline].microbatches;
      forward_.emplace_back(mbs);
      backward_.emplace_back(mbs);
    }
    ev_.deferred_count = [this] { return static_cast<std::int64_t>(deferred_.size()); };
  }
  ~rank_program() override { ev_.deferred_count = nullptr; }

  std::vector<schedule::action> actions;

 protected:
  void on_action(const stmt& s) override { emit(s); }
  void on_place(const stmt& s) override { ev_.fail(s.loc, "'chunk' assignments belong in a 'place' block"); }
  std::string where() const override { return " on rank " + std::to_string(rank_); }

 private:
  int chunk_of(const step_expr& st) {
    std::int64_t c = ev_.eval(*st.chunk);
    int held = static_cast<int>(forward_.size());
    if (c < 0 || c >= held)
      ev_.fail(st.chunk->loc, "rank " + std::to_string(rank_) + " holds " + std::to_string(held) +
                                  (held == 1 ? " chunk (chunk 0)" : " chunks (0.." + std::to_string(held - 1) + ")") +
                                  ", not chunk " + std::to_string(c));
    return static_cast<int>(c);
  }

  int explicit_microbatch(const step_expr& st, int chunk) {
    std::int64_t m = ev_.eval(*st.microbatch);
    int mbs = forward_[chunk].limit();
    if (m < 0 || m >= mbs)
      ev_.fail(st.microbatch->loc, "microbatch " + std::to_string(m) + " is out of range: chunk " + std::to_string(chunk) +
                                       "'s pipeline carries microbatches 0.." + std::to_string(mbs - 1));
    return static_cast<int>(m);
  }

  schedule::step resolve(const step_expr& st) {
    schedule::step out;
    out.kind = st.kind;
    if (st.kind == phase::W) return resolve_weight(st);
    out.chunk = chunk_of(st);
    auto& counter = st.kind == phase::F ? forward_[out.chunk] : backward_[out.chunk];
    if (st.microbatch) {
      out.microbatch = explicit_microbatch(st, out.chunk);
      counter.mark(out.microbatch);
    } else {
      out.microbatch = counter.take();
      if (out.microbatch < 0)
        ev_.fail(st.loc, std::string(st.kind == phase::F ? "F" : "B/I") + " " + std::to_string(out.chunk) +
                             ": every microbatch of chunk " + std::to_string(out.chunk) + " already has one (its pipeline carries " +
                             std::to_string(counter.limit()) + ")");
    }
    if (st.kind == phase::I) deferred_.push_back({out.chunk, out.microbatch});
    return out;
  }

  schedule::step resolve_weight(const step_expr& st) {
    schedule::step out;
    out.kind = phase::W;
    auto take = [&](auto it) {
      out.chunk = it->first;
      out.microbatch = it->second;
      deferred_.erase(it);
      return out;
    };
    if (!st.chunk) {
      if (deferred_.empty()) ev_.fail(st.loc, "W: no deferred weight gradient to run (no I is waiting for its W)");
      return take(deferred_.begin());
    }
    int chunk = chunk_of(st);
    if (!st.microbatch) {
      auto it = std::find_if(deferred_.begin(), deferred_.end(), [&](const auto& d) { return d.first == chunk; });
      if (it == deferred_.end())
        ev_.fail(st.loc, "W " + std::to_string(chunk) + ": chunk " + std::to_string(chunk) + " has no deferred weight gradient");
      return take(it);
    }
    int m = explicit_microbatch(st, chunk);
    auto it = std::find(deferred_.begin(), deferred_.end(), std::pair<int, int>{chunk, m});
    if (it == deferred_.end())
      ev_.fail(st.loc, "W" + std::to_string(chunk) + "." + std::to_string(m) + " has no I" + std::to_string(chunk) + "." +
                           std::to_string(m) + " before it on rank " + std::to_string(rank_));
    return take(it);
  }

  void emit(const stmt& s) {
    schedule::action a;
    a.where = s.loc;
    a.first = resolve(s.first);
    if (s.second) {
      if (s.first.kind != phase::F || s.second->kind == phase::W)
        ev_.fail(s.loc, "an overlapped pair starts with a forward: 'F a & B b', 'F a & I b' or 'F a & F b'");
      a.second = resolve(*s.second);
    }
    if (++total_actions_ > limits::max_actions)
      ev_.fail_limit(s.loc, "the schedule emits more than " + std::to_string(limits::max_actions) + " actions, over the limit");
    actions.push_back(a);
  }

  int rank_;
  std::size_t& total_actions_;
  std::vector<microbatch_counter> forward_, backward_;
  std::deque<std::pair<int, int>> deferred_;  // I done, W pending, oldest first
};

std::int64_t in_range(evaluator& ev, const expr& e, std::int64_t lo, std::int64_t hi, const std::string& what);

// A place block for one rank: `chunk C = pipeline[S]`, chunks numbered in order from 0.
class place_runner final : public statement_runner {
 public:
  place_runner(evaluator& ev, const std::vector<const program_decl*>& programs, schedule::schedule& s, int rank)
      : statement_runner(ev, programs), sched_(s), rank_(rank) {}

 protected:
  void on_action(const stmt& s) override { ev_.fail(s.loc, "actions belong in the 'rank' program, not in 'place'"); }
  std::string where() const override { return " for rank " + std::to_string(rank_); }
  void on_place(const stmt& st) override {
    auto& held = sched_.placement[rank_];
    std::int64_t chunk = in_range(ev_, *st.value, 0, limits::max_chunks_per_rank - 1, "the chunk number");
    if (chunk != static_cast<std::int64_t>(held.size()))
      ev_.fail(st.loc, "chunks are numbered in order from 0: rank " + std::to_string(rank_) + " expects chunk " +
                           std::to_string(held.size()) + " next, not chunk " + std::to_string(chunk));
    auto it = std::find_if(sched_.pipelines.begin(), sched_.pipelines.end(), [&](const auto& p) { return p.name == st.name; });
    if (it == sched_.pipelines.end()) ev_.fail(st.loc, "unknown pipeline '" + st.name + "'");
    std::int64_t stage = in_range(ev_, *st.end, 0, it->stages - 1, "the stage of pipeline " + st.name);
    held.push_back({static_cast<int>(it - sched_.pipelines.begin()), static_cast<int>(stage)});
  }

 private:
  schedule::schedule& sched_;
  int rank_;
};

std::int64_t in_range(evaluator& ev, const expr& e, std::int64_t lo, std::int64_t hi, const std::string& what) {
  std::int64_t v = ev.eval(e);
  if (v < lo || v > hi)
    ev.fail(e.loc, what + " is " + std::to_string(v) + "; it must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return v;
}

void apply_experts(evaluator& ev, const experts_decl& e, schedule::expert_policy& p) {
  p.where = e.loc;
  for (const auto& en : e.entries) {
    if (en.key == "planner") {
      if (en.word != "hierarchical" && en.word != "global")
        ev.fail(en.loc, "unknown planner '" + en.word + "' (expected hierarchical or global)");
      p.planner = en.word;
    } else if (en.key == "redundant") {
      p.redundant = static_cast<int>(in_range(ev, *en.value, 0, 1 << 16, "redundant"));
    } else if (en.key == "replan_every") {
      p.replan_interval = static_cast<int>(in_range(ev, *en.value, 0, 1 << 30, "replan_every"));
    } else if (en.key == "window") {
      p.window = static_cast<int>(in_range(ev, *en.value, 1, 1 << 20, "window"));
    } else {
      ev.fail(en.loc, "unknown experts setting '" + en.key + "' (expected redundant, replan_every, window or planner)");
    }
  }
}

}  // namespace

std::optional<schedule::schedule> evaluate(const evaluation_input& in, diagnostic_list& diags) {
  const schedule_decl& d = *in.decl;
  const std::size_t errors_before = diags.error_count();

  // Names first, so every unknown name is reported, executed or not.
  {
    name_checker names(diags, in.programs);
    for (const auto* prog : in.programs) {
      std::size_t m = names.mark();
      for (const auto& param : prog->params) names.push(param);
      names.check(prog->body);
      names.pop_to(m);
    }
    for (const auto& p : d.params) {
      if (p.default_value) names.check(*p.default_value);
      names.push(p.name);
    }
    for (const auto& s : d.requires_) names.check(*s);
    for (const auto& p : d.pipelines) {
      names.check(*p.stages);
      if (p.microbatches) names.check(*p.microbatches);
    }
    if (d.place) {
      std::size_t m = names.mark();
      names.push(d.place->rank_var);
      names.check(d.place->body);
      names.pop_to(m);
    }
    if (d.experts)
      for (const auto& en : d.experts->entries)
        if (en.value) names.check(*en.value);
    names.push(d.rank_var);
    names.check(d.rank_body);
  }
  if (diags.error_count() != errors_before) return std::nullopt;

  std::size_t steps = 0;
  evaluator ev(diags, steps);
  schedule::schedule s;
  s.name = d.name;
  s.where = d.loc;
  try {
    // Parameters: declared order; an override wins over the default; no default and no override is an error.
    for (const auto& p : d.params) {
      auto it = in.params.find(p.name);
      std::int64_t v;
      if (it != in.params.end()) v = it->second;
      else if (p.default_value) v = ev.eval(*p.default_value);
      else ev.fail(p.loc, "parameter '" + p.name + "' has no default: give it with --set " + p.name + "=N");
      ev.env.push_back({p.name, v});
      s.params[p.name] = v;
    }
    ev.params = ev.env.size();
    if (!s.params.count("ranks"))
      ev.fail(d.loc, "schedule '" + d.name + "' needs a parameter named 'ranks' (how many rank programs to emit)");
    const std::int64_t ranks = s.params["ranks"];
    if (ranks < 1 || ranks > limits::max_ranks)
      ev.fail_limit(d.loc, "ranks = " + std::to_string(ranks) + " is out of range: it must be between 1 and " +
                         std::to_string(limits::max_ranks));
    if (auto it = s.params.find("microbatches"); it != s.params.end() && (it->second < 1 || it->second > limits::max_microbatches))
      ev.fail_limit(d.loc, "microbatches = " + std::to_string(it->second) + " is out of range: it must be between 1 and " +
                         std::to_string(limits::max_microbatches));

    for (const auto& st : d.requires_) {
      if (st->k == stmt::kind::let) ev.env.push_back({st->name, ev.eval(*st->value)});
      else ev.require(*st, "");
    }

    for (const auto& p : d.pipelines) {
      schedule::pipeline pl;
      pl.name = p.name;
      pl.stages = static_cast<int>(in_range(ev, *p.stages, 1, limits::max_ranks * limits::max_chunks_per_rank,
                                            "pipeline " + p.name + "'s stage count"));
      if (p.microbatches)
        pl.microbatches = static_cast<int>(in_range(ev, *p.microbatches, 1, limits::max_microbatches,
                                                    "pipeline " + p.name + "'s microbatch count"));
      else if (s.params.count("microbatches"))
        pl.microbatches = static_cast<int>(s.params["microbatches"]);
      else
        ev.fail(p.loc, "pipeline " + p.name + " needs 'microbatches = N' (the schedule has no 'microbatches' parameter)");
      s.pipelines.push_back(pl);
    }
    if (s.pipelines.empty()) {
      if (!s.params.count("microbatches"))
        ev.fail(d.loc, "schedule '" + d.name + "' declares no pipeline and has no 'microbatches' parameter");
      s.pipelines.push_back({"main", static_cast<int>(ranks), static_cast<int>(s.params["microbatches"])});
    }

    // Every (stage, microbatch) of every pipeline needs at least one action: refuse sizes over the
    // action limit before anything is allocated for them.
    std::int64_t stage_microbatches = 0;
    for (const auto& pl : s.pipelines) stage_microbatches += static_cast<std::int64_t>(pl.stages) * pl.microbatches;
    if (stage_microbatches > static_cast<std::int64_t>(limits::max_actions))
      ev.fail_limit(d.loc, "the pipelines carry " + std::to_string(stage_microbatches) +
                               " (stage, microbatch) pairs, each needing an action: over the limit of " +
                               std::to_string(limits::max_actions) + " actions");
    s.placement.assign(ranks, {});
    if (d.place) {
      for (std::int64_t r = 0; r < ranks; ++r) {
        ev.env.push_back({d.place->rank_var, r});
        place_runner placer(ev, in.programs, s, static_cast<int>(r));
        placer.run(d.place->body);
        ev.env.pop_back();
        if (s.placement[r].empty())
          ev.fail(d.place->loc, "the place block gives rank " + std::to_string(r) + " no chunk");
      }
    } else {
      if (s.pipelines.size() != 1 || s.pipelines[0].stages != ranks)
        ev.fail(d.loc, "without a 'place' block a schedule has one pipeline with one stage per rank; say where each "
                       "rank's chunks go with 'place rank r { chunk 0 = pipeline[stage] ... }'");
      for (std::int64_t r = 0; r < ranks; ++r) s.placement[r].push_back({0, static_cast<int>(r)});
    }

    for (const auto& use : d.overlaps) {
      auto it = std::find_if(in.recipes.begin(), in.recipes.end(), [&](const auto* r) { return r->name == use.name; });
      if (it == in.recipes.end())
        ev.fail(use.loc, "unknown overlap recipe '" + use.name + "' (define it with 'overlap NAME { ... }' or import it)");
      auto& slot = schedule::is_forward_pair_recipe(**it) ? s.forward_overlap : s.overlap;
      if (slot)
        ev.fail(use.loc, "the schedule already follows recipe '" + slot->name + "' for " +
                             (&slot == &s.forward_overlap ? "F&F" : "F&B") + " pairs");
      slot = **it;
    }
    const experts_decl* experts = d.experts ? &*d.experts : in.file_experts;
    if (experts) {
      s.experts.emplace();
      apply_experts(ev, *experts, *s.experts);
    }
  } catch (const evaluation_stopped&) {
    return std::nullopt;
  }

  // Rank programs: each independent, so one rank's error does not hide another's.
  std::size_t total_actions = 0;
  s.programs.resize(s.placement.size());
  s.rank_where.assign(s.placement.size(), d.rank_loc);
  const std::vector<binding> header_env = ev.env;
  for (std::size_t r = 0; r < s.placement.size() && !diags.full(); ++r) {
    ev.env = header_env;
    ev.env.push_back({d.rank_var, static_cast<std::int64_t>(r)});
    rank_program prog(ev, in.programs, s, static_cast<int>(r), total_actions);
    try {
      prog.run(d.rank_body);
    } catch (const evaluation_stopped&) {
      if (total_actions > limits::max_actions || steps > limits::max_eval_steps) break;
      continue;
    }
    s.programs[r] = std::move(prog.actions);
  }
  if (diags.error_count() != errors_before) return std::nullopt;
  return s;
}

}  // namespace loom::dsl
