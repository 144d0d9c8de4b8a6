#include "actors/component_actor.hpp"

#include <chrono>
#include <map>

#include "actors/component_work.hpp"
#include "actors/cuda_backend.hpp"

namespace loom::actors {

namespace {

struct pending_op {
  caf::typed_response_promise<op_result> promise;
  op_request op;
  std::int64_t start_ns = 0;
  double work_ns = 0;                // timed backend: what the op must do at full rate
  int comm_slot = -1;                // timed backend: its entry in the rank's comm log
  std::int64_t deadline_ns = 0;      // timed backend: when its timer should fire
  std::int64_t wait_start_ns = 0;    // an exchange: its send half is done, the peers' data not yet here
  std::int64_t wait_end_ns = 0;
};

struct component_state {
  std::shared_ptr<rank_context> ctx;
  component_role role = component_role::attention;
  std::map<std::int32_t, pending_op> pending;
  static inline const char* name = "loom.component";
};

using self_ptr = component_actor::stateful_pointer<component_state>;

op_result result_of(const rank_context& ctx, const op_request& op, std::int64_t start, expected<void> status) {
  op_result r;
  r.index = op.index;
  r.start_ns = start;
  r.end_ns = ctx.now_ns();
  if (!status) {
    r.ok = false;
    r.error = status.error().message;
  }
  return r;
}

void finish(self_ptr self, std::int32_t index, expected<void> status) {
  auto it = self->state.pending.find(index);
  if (it == self->state.pending.end()) return;
  pending_op p = std::move(it->second);
  self->state.pending.erase(it);
  op_result r = result_of(*self->state.ctx, p.op, p.start_ns, std::move(status));
  if (r.ok && p.wait_end_ns > 0) {
    r.wait_start_ns = p.wait_start_ns;
    r.wait_end_ns = p.wait_end_ns;
  }
  p.promise.deliver(std::move(r));
}

// Hands this rank's blocks to the transport's all-to-all over the expert-parallel group; the
// result comes back to this actor as one message.
caf::typed_response_promise<op_result> start_exchange(self_ptr self, const op_request& op, std::int64_t start) {
  auto& ctx = *self->state.ctx;
  auto rp = self->make_response_promise<op_result>();
  auto out = exchange_out(ctx, op);
  if (!out) {
    rp.deliver(result_of(ctx, op, start, unexpected(out.error())));
    return rp;
  }
  std::vector<int> group(ctx.ep.ep);
  for (int q = 0; q < ctx.ep.ep; ++q) group[q] = group_peer(ctx, q);
  std::vector<payload> outgoing = std::move(*out);
  if (ctx.mode == backend::cuda && !ctx.net.carries_device_memory())  // other processes get host copies
    for (int q = 0; q < ctx.ep.ep; ++q)
      if (group[q] != ctx.global_rank)
        if (auto ok = gpu_leave_process(ctx, outgoing[q]); !ok) {
          rp.deliver(result_of(ctx, op, start, unexpected(ok.error())));
          return rp;
        }
  self->state.pending.emplace(op.index, pending_op{rp, op, start, 0, -1, 0, ctx.now_ns(), 0});
  component_actor handle = self;
  ctx.net.all_to_all(group, exchange_tag(ctx, op), std::move(outgoing), [handle, index = op.index](expected<std::vector<payload>> got) {
    if (got) caf::anon_send(handle, arrive_atom::value, index, std::move(*got));
    else caf::anon_send(handle, arrive_atom::value, index, got.error().message);
  });
  return rp;
}

component_actor::behavior_type component(self_ptr self, std::shared_ptr<rank_context> ctx, component_role role) {
  self->state.ctx = std::move(ctx);
  self->state.role = role;
  return {
      [self](exec_atom, op_request op) -> caf::typed_response_promise<op_result> {
        auto& ctx = *self->state.ctx;
        const std::int64_t start = ctx.now_ns();
        const auto kind = static_cast<op_kind>(op.kind);
        if (ctx.mode == backend::timed) {
          auto rp = self->make_response_promise<op_result>();
          const bool hang = ctx.inject && ctx.inject->hang && ctx.inject->kind == op.kind && ctx.inject->microbatch == op.microbatch;
          const int stream_index = is_comm(kind) ? 1 : 0;
          std::int64_t ns = static_cast<std::int64_t>(ctx.timed_ms[op.kind] * 1e6);
          const std::int64_t paid = std::min(ns, ctx.timer_debt_ns[stream_index]);
          ctx.timer_debt_ns[stream_index] -= paid;
          ns -= paid;
          if (ns == 0 && !hang) {  // nothing to wait for: no timer round trip
            rp.deliver(result_of(ctx, op, start, {}));
            return rp;
          }
          pending_op p{rp, op, start, static_cast<double>(ns), -1, start + ns};
          if (is_comm(kind)) {
            std::lock_guard<std::mutex> lock(ctx.comm_mutex);
            p.comm_slot = static_cast<int>(ctx.comm_log.size());
            ctx.comm_log.push_back({start, -1, op.sms});
          }
          self->state.pending.emplace(op.index, std::move(p));
          if (!hang) self->delayed_send(self, std::chrono::nanoseconds(ns), timer_atom::value, op.index);
          return rp;
        }
        if (is_comm(kind)) return start_exchange(self, op, start);
        auto rp = self->make_response_promise<op_result>();
        const bool hang = ctx.inject && ctx.inject->hang && ctx.inject->kind == op.kind && ctx.inject->microbatch == op.microbatch;
        if (hang) {  // never answers: the watchdog must notice
          self->state.pending.emplace(op.index, pending_op{rp, op, start, 0, -1, 0});
          return rp;
        }
        rp.deliver(result_of(ctx, op, start, run_compute(ctx, op)));
        return rp;
      },
      [self](timer_atom, std::int32_t index) {
        // Timed backend: a compute op is done once it has done its work, slowed while communication
        // kernels held SMs; otherwise the timer is armed again for what is left.
        auto it = self->state.pending.find(index);
        if (it == self->state.pending.end()) return;
        auto& ctx = *self->state.ctx;
        auto& p = it->second;
        const std::int64_t now = ctx.now_ns();
        const int stream_index = is_comm(static_cast<op_kind>(p.op.kind)) ? 1 : 0;
        if (p.comm_slot >= 0) {
          std::lock_guard<std::mutex> lock(ctx.comm_mutex);
          ctx.comm_log[p.comm_slot].end_ns = now;
        } else {
          double rate = 1;
          const double left = p.work_ns - ctx.timed_work(p.start_ns, now, rate);
          if (left > 1000 && rate > 0) {  // more than a microsecond of work left
            p.deadline_ns = now + static_cast<std::int64_t>(left / rate);
            self->delayed_send(self, std::chrono::nanoseconds(p.deadline_ns - now), timer_atom::value, index);
            return;
          }
        }
        ctx.timer_debt_ns[stream_index] += std::max<std::int64_t>(0, now - p.deadline_ns);
        finish(self, index, {});
      },
      [self](arrive_atom, std::int32_t index, std::vector<payload> data) {
        auto it = self->state.pending.find(index);
        if (it == self->state.pending.end()) return;
        it->second.wait_end_ns = self->state.ctx->now_ns();
        auto status = exchange_in(*self->state.ctx, it->second.op, std::move(data));
        finish(self, index, std::move(status));
      },
      [self](arrive_atom, std::int32_t index, std::string error) {
        auto& ctx = *self->state.ctx;
        auto it = self->state.pending.find(index);
        const std::string who = "rank " + std::to_string(ctx.pipeline_rank) + " (ep " + std::to_string(ctx.ep_index) + ")";
        const std::string what = it == self->state.pending.end() ? std::string("an exchange")
                                                                  : to_string(static_cast<op_kind>(it->second.op.kind)) +
                                                                        std::string(" of microbatch ") +
                                                                        std::to_string(it->second.op.microbatch);
        finish(self, index, unexpected(errc::transport_error, who + ", " + what + ": the expert-parallel exchange failed: " + error));
      },
  };
}

}  // namespace

component_actor spawn_component(caf::actor_system& sys, std::shared_ptr<rank_context> ctx, component_role role) {
  // On the GPU a dispatch waits for its route plan's counts: such actors get a thread of their own
  // rather than holding one of the scheduler's.
  if (ctx->mode == backend::cuda) return sys.spawn<caf::detached>(component, std::move(ctx), role);
  return sys.spawn(component, std::move(ctx), role);
}

}  // namespace loom::actors
