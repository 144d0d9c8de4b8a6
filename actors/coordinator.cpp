#include "actors/coordinator.hpp"

#include <chrono>
#include <cmath>

namespace loom::actors {

namespace {

using clock_type = std::chrono::steady_clock;

struct coordinator_state {
  coordinator_setup setup;
  caf::typed_response_promise<run_outcome> promise;
  run_outcome outcome;
  bool finished = false;

  int step = 0;
  int phase = 0;                 // 1: the step's programs, 2: gradient sums, 3: optimizer, 4: migration
  std::int64_t phase_id = 0;     // changes with every phase, so stale watchdog ticks are ignored
  int pending = 0;
  step_outcome current;
  clock_type::time_point step_start;

  std::vector<std::int64_t> seen_progress;
  clock_type::time_point last_change;
  bool polling = false;

  static inline const char* name = "loom.coordinator";
};

using self_ptr = coordinator_actor::stateful_pointer<coordinator_state>;

void fail(self_ptr self, const std::string& why) {
  auto& st = self->state;
  if (st.finished) return;
  st.finished = true;
  if (st.setup.on_abort) st.setup.on_abort(loom::error(errc::internal, why));
  for (auto& r : st.setup.ranks) self->send_exit(r, caf::exit_reason::user_shutdown);
  for (auto& a : st.setup.others) self->send_exit(a, caf::exit_reason::user_shutdown);
  st.outcome.ok = false;
  st.outcome.error = why;
  st.promise.deliver(std::move(st.outcome));
}

std::chrono::nanoseconds watch_period(const coordinator_setup& s) {
  double seconds = std::max(0.05, std::min(1.0, s.watchdog_seconds / 4));
  return std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
}

void begin_phase(self_ptr self, int phase) {
  auto& st = self->state;
  st.phase = phase;
  ++st.phase_id;
  st.pending = static_cast<int>(st.setup.ranks.size());
  st.last_change = clock_type::now();
  self->delayed_send(self, watch_period(st.setup), watch_atom::value, st.phase_id);
}

void start_step(self_ptr self);

void finish_step(self_ptr self) {
  auto& st = self->state;
  st.current.wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - st.step_start).count();
  st.outcome.steps.push_back(st.current);
  if (st.setup.on_step) st.setup.on_step(st.step, st.outcome.steps.back());
  ++st.step;
  if (st.step == st.setup.steps) {
    st.finished = true;
    ++st.phase_id;
    st.promise.deliver(std::move(st.outcome));
    return;
  }
  start_step(self);
}

apply_request make_apply(self_ptr self) {
  auto& st = self->state;
  apply_request req;
  req.step = st.step + 1;
  if (st.setup.logical_layer.empty()) return req;
  req.load.assign(static_cast<std::size_t>(st.setup.logical_layers) * st.setup.experts, 0.0);
  for (std::size_t r = 0; r < st.current.ranks.size(); ++r) {
    const auto& load = st.current.ranks[r].load;
    const auto& layers = st.setup.logical_layer[r];
    for (std::size_t cl = 0; cl < layers.size(); ++cl)
      for (int e = 0; e < st.setup.experts; ++e)
        req.load[static_cast<std::size_t>(layers[cl]) * st.setup.experts + e] += load[cl * st.setup.experts + e];
  }
  return req;
}

// Moves experts to a new placement between steps, when the re-planning hook asks for one.
void start_migrate(self_ptr self) {
  auto& st = self->state;
  migrate_request req;
  // No move after the last step: nothing would run on the new placement.
  if (st.setup.replan && st.step + 1 < st.setup.steps) req = st.setup.replan(st.step, st.current.load);
  if (req.layers.empty()) return finish_step(self);
  begin_phase(self, 4);
  st.current.migrated = true;
  const auto started = clock_type::now();
  for (auto& r : st.setup.ranks)
    self->request(r, caf::infinite, migrate_atom::value, req)
        .then(
            [self, started](migrate_report rep) {
              auto& st = self->state;
              if (st.finished) return;
              if (!rep.ok) return fail(self, "expert migration after step " + std::to_string(st.step) + ": " + rep.error);
              st.current.migrate_bytes += rep.bytes_sent;
              st.current.experts_moved += rep.experts_moved;
              if (--st.pending > 0) return;
              st.current.migrate_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - started).count();
              finish_step(self);
            },
            [self](caf::error& e) { fail(self, "expert migration failed: " + self->system().render(e)); });
}

void start_apply(self_ptr self) {
  auto& st = self->state;
  begin_phase(self, 3);
  auto req = make_apply(self);
  st.current.load = req.load;
  if (!st.setup.send_load) req.load.clear();
  for (auto& r : st.setup.ranks)
    self->request(r, caf::infinite, apply_atom::value, req)
        .then(
            [self](bool) {
              if (self->state.finished) return;
              if (--self->state.pending == 0) start_migrate(self);
            },
            [self](caf::error& e) { fail(self, "the optimizer step failed: " + self->system().render(e)); });
}

void start_sync(self_ptr self) {
  auto& st = self->state;
  begin_phase(self, 2);
  auto grad_square = std::make_shared<double>(0.0);
  for (auto& r : st.setup.ranks)
    self->request(r, caf::infinite, sync_atom::value, static_cast<std::int32_t>(st.step))
        .then(
            [self, grad_square](sync_report rep) {
              auto& st = self->state;
              if (st.finished) return;
              if (!rep.ok) return fail(self, rep.error);
              *grad_square += rep.grad_square;
              if (--st.pending > 0) return;
              st.current.grad_norm = std::sqrt(*grad_square);
              start_apply(self);
            },
            [self](caf::error& e) { fail(self, "the gradient sums failed: " + self->system().render(e)); });
}

void start_step(self_ptr self) {
  auto& st = self->state;
  st.current = {};
  st.current.ranks.resize(st.setup.ranks.size());
  st.step_start = clock_type::now();
  begin_phase(self, 1);
  for (std::size_t i = 0; i < st.setup.ranks.size(); ++i)
    self->request(st.setup.ranks[i], caf::infinite, step_atom::value, static_cast<std::int32_t>(st.step))
        .then(
            [self, i](step_report rep) {
              auto& st = self->state;
              if (st.finished) return;
              if (!rep.ok) return fail(self, "step " + std::to_string(st.step) + ": " + rep.error);
              st.current.loss_sum += rep.loss_sum;
              st.current.ranks[i] = std::move(rep);
              if (--st.pending == 0) start_sync(self);
            },
            [self, i](caf::error& e) {
              fail(self, "rank actor " + std::to_string(i) + " stopped during step " + std::to_string(self->state.step) +
                             ": " + self->system().render(e));
            });
}

// The watchdog: polls every rank's progress counter; if none moved for watchdog_seconds, the
// experiment fails with what each rank is waiting for.
void watch(self_ptr self, std::int64_t id) {
  auto& st = self->state;
  if (st.finished || id != st.phase_id || st.polling) return;
  st.polling = true;
  const std::size_t n = st.setup.ranks.size();
  auto answers = std::make_shared<std::vector<rank_status>>(n);
  auto left = std::make_shared<std::size_t>(n);
  auto done = [self, id, answers]() {
    auto& st = self->state;
    st.polling = false;
    if (st.finished || id != st.phase_id) return;
    bool moved = st.seen_progress.size() != answers->size();
    st.seen_progress.resize(answers->size(), -1);
    for (std::size_t r = 0; r < answers->size(); ++r)
      if ((*answers)[r].progress != st.seen_progress[r]) {
        moved = true;
        st.seen_progress[r] = (*answers)[r].progress;
      }
    const auto now = clock_type::now();
    if (moved) st.last_change = now;
    const double quiet = std::chrono::duration<double>(now - st.last_change).count();
    if (quiet >= st.setup.watchdog_seconds) {
      const char* phase = st.phase == 1   ? "running the schedule"
                          : st.phase == 2 ? "summing gradients"
                          : st.phase == 3 ? "applying the optimizer"
                                          : "moving experts";
      std::string why = "watchdog: no rank made progress for " + std::to_string(static_cast<int>(quiet)) + " s while " + phase +
                        " in step " + std::to_string(st.step) + ":";
      for (const auto& s : *answers)
        if (s.waiting != "idle") why += "\n  " + (st.setup.describe ? st.setup.describe(s) : s.waiting);
      return fail(self, why);
    }
    self->delayed_send(self, watch_period(st.setup), watch_atom::value, id);
  };
  for (std::size_t r = 0; r < n; ++r)
    self->request(st.setup.ranks[r], std::chrono::seconds(10), status_atom::value)
        .then(
            [answers, left, r, done](rank_status s) {
              (*answers)[r] = std::move(s);
              if (--*left == 0) done();
            },
            [answers, left, r, done](caf::error&) {
              (*answers)[r].rank = static_cast<std::int32_t>(r);
              (*answers)[r].progress = -2;
              (*answers)[r].waiting = "rank " + std::to_string(r) + " does not answer";
              if (--*left == 0) done();
            });
}

coordinator_actor::behavior_type coordinator(self_ptr self, coordinator_setup setup) {
  self->state.setup = std::move(setup);
  // A rank actor that stops (its process died, its host became unreachable) ends the run at once.
  for (auto& r : self->state.setup.ranks) self->monitor(r);
  self->set_down_handler([self](caf::down_msg& dm) {
    const auto& ranks = self->state.setup.ranks;
    for (std::size_t i = 0; i < ranks.size(); ++i)
      if (caf::actor_addr(ranks[i].address()) == dm.source) {
        const bool lost = dm.reason == caf::exit_reason::remote_link_unreachable;
        const auto& name = self->state.setup.rank_name;
        fail(self, (name ? name(static_cast<int>(i)) : "rank " + std::to_string(i)) +
                       (lost ? " became unreachable (its process or host is gone)" : " stopped") + " during step " +
                       std::to_string(self->state.step) + ": " + self->system().render(dm.reason));
        return;
      }
  });
  return {
      [self](run_atom) -> caf::typed_response_promise<run_outcome> {
        auto& st = self->state;
        st.promise = self->make_response_promise<run_outcome>();
        if (st.setup.steps <= 0 || st.setup.ranks.empty()) {
          st.finished = true;
          st.promise.deliver(st.outcome);
          return st.promise;
        }
        start_step(self);
        return st.promise;
      },
      [self](watch_atom, std::int64_t id) { watch(self, id); },
  };
}

}  // namespace

coordinator_actor spawn_coordinator(caf::actor_system& sys, coordinator_setup setup) {
  return sys.spawn(coordinator, std::move(setup));
}

void register_coordinator_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<step_outcome>("loom::step_outcome");
  cfg.add_message_type<run_outcome>("loom::run_outcome");
  cfg.add_message_type<std::vector<step_report>>("std::vector<loom::step_report>");
  cfg.add_message_type<std::vector<step_outcome>>("std::vector<loom::step_outcome>");
}

}  // namespace loom::actors
