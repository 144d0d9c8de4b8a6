#include "actors/rank_driver.hpp"

#include <algorithm>
#include <cmath>

#include "actors/cuda_backend.hpp"
#include "actors/expert_migration.hpp"
#include "kernels/model/optimizer.hpp"

namespace loom::actors {

namespace {

struct sync_progress {
  int missing = 0;                       // payloads still to arrive for this group
  std::vector<std::vector<double>> parts;  // root: per member, the member's contribution
  // A buffer that came back to this rank in the last step, kept (with its pages) for the next local
  // sum: the gradients of a group run to hundreds of MB, and a fresh buffer each step costs more in
  // page faults than the sum itself.
  std::vector<double> spare;
};

struct driver_state {
  driver_setup setup;
  std::vector<std::vector<int>> dependents;  // of each op, computed once

  // The step in progress.
  bool active = false, failed = false;
  caf::typed_response_promise<step_report> step_promise;
  std::vector<int> waiting;    // unmet dependencies per op
  std::vector<char> done;
  std::size_t head[2] = {0, 0};
  int running[2] = {-1, -1};
  std::vector<int> action_left;
  int remaining = 0;
  std::vector<op_timing> timings;
  std::vector<int> ready_sends;  // sends whose action is complete
  std::int64_t progress = 0;

  // The gradient sums in progress, and their plan (rebuilt when experts move).
  sync_plan sync_groups;
  caf::typed_response_promise<sync_report> sync_promise;
  std::vector<sync_progress> sync;
  int sync_left = 0;

  // An expert migration in progress.
  caf::typed_response_promise<migrate_report> migrate_promise;
  migration moving;
  migrate_report moved;
  int migrate_left = 0;

  static inline const char* name = "loom.rank";
};

using self_ptr = rank_actor::stateful_pointer<driver_state>;

const program_op& op_at(self_ptr self, int i) { return self->state.setup.program->ops[i]; }
rank_context& ctx_of(self_ptr self) { return *self->state.setup.ctx; }

std::string rank_name(const rank_context& ctx) {
  return "rank " + std::to_string(ctx.pipeline_rank) + (ctx.ep.ep > 1 ? " (ep " + std::to_string(ctx.ep_index) + ")" : "");
}

void fail_step(self_ptr self, const std::string& why) {
  auto& st = self->state;
  if (!st.active || st.failed) return;
  st.failed = true;
  st.active = false;
  step_report r;
  r.rank = ctx_of(self).global_rank;
  r.ok = false;
  r.error = why;
  st.step_promise.deliver(std::move(r));
}

void fail_step(self_ptr self, const std::string& why);

void finish_step(self_ptr self) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  if (ctx.mode == backend::cuda)  // the one wait for the GPU in a step
    if (auto ok = gpu_end_step(ctx, st.timings); !ok) return fail_step(self, rank_name(ctx) + ": " + ok.error().message);
  st.active = false;
  step_report r;
  r.rank = ctx.global_rank;
  r.loss_sum = ctx.loss_sum;
  r.load = ctx.load;
  r.ops = std::move(st.timings);
  r.peak_bytes = ctx.peak_bytes;
  r.expert_rows = ctx.expert_rows;
  r.end_ns = ctx.now_ns();
  st.step_promise.deliver(std::move(r));
}

void pump(self_ptr self);
void send_now(self_ptr self, int i);

// Marks op i done and releases what waited on it.
void complete(self_ptr self, int i, std::int64_t start_ns, std::int64_t end_ns, std::int64_t wait_start_ns = 0,
              std::int64_t wait_end_ns = 0) {
  auto& st = self->state;
  if (st.done[i]) return;
  st.done[i] = 1;
  --st.remaining;
  ++st.progress;
  st.timings.push_back({i, start_ns, end_ns, wait_start_ns, wait_end_ns});
  const program_op& o = op_at(self, i);
  for (int d : st.dependents[i])
    if (--st.waiting[d] == 0 && op_at(self, d).kind == op_kind::send) st.ready_sends.push_back(d);
  if (o.kind == op_kind::recv || o.kind == op_kind::send || --st.action_left[o.action] > 0) return;
  // The action is complete: its outputs go first, then the state it no longer needs.
  while (!st.ready_sends.empty() && st.active) {
    int send = st.ready_sends.back();
    st.ready_sends.pop_back();
    send_now(self, send);
  }
  auto& ctx = ctx_of(self);
  if (ctx.mode == backend::cuda) {
    for (const auto& h : st.setup.program->handovers[o.action])
      if (auto ok = gpu_handover(ctx, h, st.setup.program->action_ops[o.action]); !ok)
        return fail_step(self, rank_name(ctx) + ": " + ok.error().message);
  } else if (ctx.mode != backend::timed)
    for (const auto& h : st.setup.program->handovers[o.action]) {
      chunk_run& from = ctx.run(h.from_chunk, h.microbatch);
      chunk_run& to = ctx.run(h.to_chunk, h.microbatch);
      if (h.gradient) to.layers.back().dy = std::move(from.input_grad);
      else to.layers.front().x = std::move(from.layers.back().y);
    }
  for (auto [chunk, mb] : st.setup.program->releases[o.action]) ctx.release(chunk, mb);
}

// A send goes as soon as its action is complete: the payload is the chunk's output (forward) or its
// input's gradient (backward).
void send_now(self_ptr self, int i) {
  auto& ctx = ctx_of(self);
  const program_op& o = op_at(self, i);
  payload p;
  if (ctx.mode == backend::cuda) {
    auto out = gpu_pipeline_out(ctx, o.chunk, o.microbatch, o.net_tag.kind != traffic::pipeline_activation,
                                self->state.setup.program->action_ops[o.action]);
    if (!out) return fail_step(self, rank_name(ctx) + ": " + out.error().message);
    p = std::move(*out);
    if (!ctx.net.carries_device_memory())  // to another process: through host memory
      if (auto ok = gpu_leave_process(ctx, p); !ok) return fail_step(self, rank_name(ctx) + ": " + ok.error().message);
  } else if (ctx.mode != backend::timed) {
    chunk_run& run = ctx.run(o.chunk, o.microbatch);
    if (o.net_tag.kind == traffic::pipeline_activation) p.f = std::move(run.layers.back().y);
    else p.f = std::move(run.input_grad);
  }
  const int peer = o.peer * ctx.ep.ep + ctx.ep_index;
  const std::int64_t t = ctx.now_ns();
  if (auto sent = ctx.net.send(peer, o.net_tag, std::move(p)); !sent) {
    fail_step(self, rank_name(ctx) + ": pipeline send to rank " + std::to_string(o.peer) +
                        (ctx.ep.ep > 1 ? " (ep " + std::to_string(ctx.ep_index) + ")" : "") + " failed: " + sent.error().message);
    return;
  }
  complete(self, i, t, t);
}

void issue(self_ptr self, int s, int i) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  const program_op& o = op_at(self, i);
  st.running[s] = i;
  op_request req{i, static_cast<std::uint8_t>(o.kind), o.chunk, o.layer, o.microbatch, ctx.step, o.sms, {}};
  if (ctx.mode == backend::cuda)  // the GPU orders the op after the component ops it depends on
    for (int d : o.deps)
      if (op_at(self, d).kind != op_kind::recv && op_at(self, d).kind != op_kind::send) req.after.push_back(d);
  auto target = st.setup.components[o.chunk][static_cast<int>(role_of(o.kind))];
  self->request(target, caf::infinite, exec_atom::value, req)
      .then(
          [self, s](op_result r) {
            auto& st = self->state;
            if (!st.active) return;
            if (!r.ok) return fail_step(self, r.error);
            st.running[s] = -1;
            complete(self, r.index, r.start_ns, r.end_ns, r.wait_start_ns, r.wait_end_ns);
            pump(self);
          },
          [self](caf::error& e) {
            fail_step(self, rank_name(ctx_of(self)) + ": a component actor failed: " + self->system().render(e));
          });
}

void pump(self_ptr self) {
  auto& st = self->state;
  if (!st.active) return;
  const auto& prog = *st.setup.program;
  while (!st.ready_sends.empty() && st.active) {
    int i = st.ready_sends.back();
    st.ready_sends.pop_back();
    send_now(self, i);
  }
  const std::vector<int>* queues[2] = {&prog.compute_queue, &prog.comm_queue};
  for (int s = 0; s < 2 && st.active; ++s) {
    if (st.running[s] >= 0 || st.head[s] >= queues[s]->size()) continue;
    int i = (*queues[s])[st.head[s]];
    if (st.waiting[i] > 0) continue;
    ++st.head[s];
    issue(self, s, i);
  }
  if (st.active && st.remaining == 0) finish_step(self);
}

void start_step(self_ptr self, std::int32_t step) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  const auto& prog = *st.setup.program;
  ctx.begin_step(step);
  st.active = true;
  st.failed = false;
  if (ctx.mode == backend::cuda)
    if (auto ok = gpu_begin_step(ctx); !ok) return fail_step(self, rank_name(ctx) + ": " + ok.error().message);
  st.waiting.assign(prog.ops.size(), 0);
  st.done.assign(prog.ops.size(), 0);
  for (std::size_t i = 0; i < prog.ops.size(); ++i) st.waiting[i] = static_cast<int>(prog.ops[i].deps.size());
  st.head[0] = st.head[1] = 0;
  st.running[0] = st.running[1] = -1;
  st.action_left.assign(prog.action_ops.size(), 0);
  for (std::size_t a = 0; a < prog.action_ops.size(); ++a) st.action_left[a] = static_cast<int>(prog.action_ops[a].size());
  st.remaining = static_cast<int>(prog.ops.size());
  st.timings.clear();
  st.timings.reserve(prog.ops.size());
  st.ready_sends.clear();
  // Every pipeline input is asked for at once; it lands in the chunk's state when it arrives.
  rank_actor handle = self;
  for (std::size_t i = 0; i < prog.ops.size(); ++i) {
    const program_op& o = prog.ops[i];
    if (o.kind != op_kind::recv) continue;
    ctx.net.receive(o.peer * ctx.ep.ep + ctx.ep_index, o.net_tag, [handle, i, peer = o.peer](expected<payload> p) {
      if (p) caf::anon_send(handle, arrive_atom::value, static_cast<std::int32_t>(i), static_cast<std::int32_t>(peer), std::move(*p));
      else caf::anon_send(handle, arrive_atom::value, static_cast<std::int32_t>(i), static_cast<std::int32_t>(peer), p.error().message);
    });
  }
  pump(self);
}

// --- gradient sums ---------------------------------------------------------------------------------

// This rank's contribution to a group: its copies of each tensor summed in chunk order, concatenated.
std::vector<double> local_sum(self_ptr self, const sync_group& g, std::vector<double> out) {
  auto& ctx = ctx_of(self);
  std::size_t total = 0;
  for (const auto& copies : g.tensors) total += ctx.chunks[copies[0].first].params->at(copies[0].second).grad.size();
  out.clear();
  out.reserve(total);  // gradients run to hundreds of MB: one allocation, no regrowth
  for (const auto& copies : g.tensors) {
    const auto& first = ctx.chunks[copies[0].first].params->at(copies[0].second).grad;
    std::size_t at = out.size();
    out.insert(out.end(), first.begin(), first.end());
    for (std::size_t c = 1; c < copies.size(); ++c) {
      const auto& more = ctx.chunks[copies[c].first].params->at(copies[c].second).grad;
      for (std::size_t k = 0; k < more.size(); ++k) out[at + k] += more[k];
    }
  }
  return out;
}

// A group held by this rank alone: the copies of each tensor (an expert's redundant slots, a tensor
// of both V-shaped chunks) are summed in place, in copy order, as local_sum would; a tensor with one
// copy is left alone. Most groups are of this kind, and this spares copying them out and back.
void sum_in_place(self_ptr self, const sync_group& g) {
  auto& ctx = ctx_of(self);
  for (const auto& copies : g.tensors) {
    if (copies.size() < 2) continue;
    auto& first = ctx.chunks[copies[0].first].params->at(copies[0].second).grad;
    for (std::size_t c = 1; c < copies.size(); ++c) {
      const auto& more = ctx.chunks[copies[c].first].params->at(copies[c].second).grad;
      for (std::size_t k = 0; k < more.size(); ++k) first[k] += more[k];
    }
    for (std::size_t c = 1; c < copies.size(); ++c) {
      auto& other = ctx.chunks[copies[c].first].params->at(copies[c].second).grad;
      std::copy(first.begin(), first.end(), other.begin());
    }
  }
}

void write_back(self_ptr self, const sync_group& g, const std::vector<double>& sum) {
  auto& ctx = ctx_of(self);
  std::size_t at = 0;
  for (const auto& copies : g.tensors) {
    std::size_t n = ctx.chunks[copies[0].first].params->at(copies[0].second).grad.size();
    for (auto [chunk, slot] : copies) {
      auto& grad = ctx.chunks[chunk].params->at(slot).grad;
      std::copy(sum.begin() + static_cast<std::ptrdiff_t>(at), sum.begin() + static_cast<std::ptrdiff_t>(at + n), grad.begin());
    }
    at += n;
  }
}

void finish_sync(self_ptr self) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  sync_report r;
  r.rank = ctx.global_rank;
  for (const auto& g : st.sync_groups.groups) {
    if (g.members.front() != ctx.global_rank) continue;  // counted once, by the summing rank
    for (const auto& copies : g.tensors) {
      const auto& p = ctx.chunks[copies[0].first].params->at(copies[0].second);
      if (!p.trainable) continue;
      for (double v : p.grad) r.grad_square += v * v;
    }
  }
  st.sync_promise.deliver(std::move(r));
}

void group_done(self_ptr self) {
  if (--self->state.sync_left == 0) finish_sync(self);
}

tag sync_tag(int channel) { return {traffic::grad_sync, 0, 0, 0, static_cast<std::uint32_t>(channel)}; }

void start_sync(self_ptr self) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  const auto& groups = st.sync_groups.groups;
  st.sync.resize(groups.size());  // keeps the spare buffers; the plan changes only with the placement
  st.sync_left = static_cast<int>(groups.size()) + 1;  // +1 so nothing finishes before all are started
  rank_actor handle = self;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const auto& g = groups[gi];
    if (g.members.size() == 1) {
      sum_in_place(self, g);
      group_done(self);
      continue;
    }
    st.sync[gi].missing = 0;
    std::vector<double> mine = local_sum(self, g, std::move(st.sync[gi].spare));
    const bool root = g.members.front() == ctx.global_rank;
    auto receive_from = [&](int peer) {
      ctx.net.receive(peer, sync_tag(g.channel.at(peer)), [handle, gi, peer](expected<payload> p) {
        if (p) caf::anon_send(handle, sync_atom::value, static_cast<std::int32_t>(gi), static_cast<std::int32_t>(peer), std::move(*p));
        else caf::anon_send(handle, sync_atom::value, static_cast<std::int32_t>(gi), static_cast<std::int32_t>(peer), p.error().message);
      });
    };
    if (root) {
      st.sync[gi].parts.assign(g.members.size(), {});
      st.sync[gi].parts[0] = std::move(mine);
      st.sync[gi].missing = static_cast<int>(g.members.size()) - 1;
      for (std::size_t k = 1; k < g.members.size(); ++k) receive_from(g.members[k]);
    } else {
      st.sync[gi].missing = 1;
      payload p;
      p.d = std::move(mine);
      if (auto sent = ctx.net.send(g.members.front(), sync_tag(g.channel.at(g.members.front())), std::move(p)); !sent) {
        st.sync_promise.deliver(sync_report{ctx.global_rank, false, sent.error().message, 0});
        return;
      }
      receive_from(g.members.front());
    }
  }
  group_done(self);
}

void on_sync_payload(self_ptr self, std::size_t gi, int from, payload p) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  const auto& g = st.sync_groups.groups[gi];
  auto& prog = st.sync[gi];
  if (g.members.front() != ctx.global_rank) {  // the sum came back
    write_back(self, g, p.d);
    prog.spare = std::move(p.d);
    group_done(self);
    return;
  }
  auto pos = std::find(g.members.begin(), g.members.end(), from) - g.members.begin();
  prog.parts[pos] = std::move(p.d);
  if (--prog.missing > 0) return;
  std::vector<double> sum = std::move(prog.parts[0]);  // members in ascending order: a fixed sum order
  for (std::size_t k = 1; k < prog.parts.size(); ++k)
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += prog.parts[k][i];
  prog.spare = std::move(prog.parts[1]);
  write_back(self, g, sum);
  for (std::size_t k = 1; k < g.members.size(); ++k) {
    payload out;
    if (k + 1 == g.members.size()) out.d = std::move(sum);  // the last member takes the buffer itself
    else out.d = sum;
    if (auto sent = ctx.net.send(g.members[k], sync_tag(g.channel.at(g.members[k])), std::move(out)); !sent) {
      st.sync_promise.deliver(sync_report{ctx.global_rank, false, sent.error().message, 0});
      return;
    }
  }
  group_done(self);
}

// --- optimizer -----------------------------------------------------------------------------------

void apply_update(self_ptr self, const apply_request& req) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  for (auto& c : ctx.chunks) {
    model::apply_adamw(*c.params, st.setup.adamw, req.step);
    if (st.setup.bias_update_rate <= 0 || req.load.empty()) continue;
    const int E = ctx.shape.experts;
    for (int l = 0; l < c.params->layers(); ++l) {
      const double* load = req.load.data() + static_cast<std::size_t>(c.first_layer + l) * E;
      double mean = 0;
      for (int e = 0; e < E; ++e) mean += load[e];
      mean /= E;
      auto& bias = c.params->at(c.params->layer(l).router_bias).value;
      for (int e = 0; e < E; ++e)
        bias[e] += st.setup.bias_update_rate * static_cast<float>((mean > load[e]) - (mean < load[e]));
    }
  }
}

// --- expert migration ------------------------------------------------------------------------------

void finish_migrate(self_ptr self) {
  auto& st = self->state;
  finish_migration(ctx_of(self), st.moving);
  if (ctx_of(self).mode == backend::cuda)  // the experts' new homes and tensors go up to the GPU
    if (auto ok = gpu_upload(ctx_of(self)); !ok) {
      st.moved.ok = false;
      st.moved.error = rank_name(ctx_of(self)) + ": " + ok.error().message;
    }
  st.sync_groups = build_sync_plan(ctx_of(self), st.setup.stage_holders);  // experts moved: new holders
  st.migrate_promise.deliver(std::move(st.moved));
}

void start_migrate(self_ptr self, const migrate_request& req) {
  auto& st = self->state;
  auto& ctx = ctx_of(self);
  st.moving = plan_migration(ctx, req);
  st.moved = migrate_report{ctx.global_rank, true, {}, 0, static_cast<std::int64_t>(st.moving.receive.size())};
  for (auto& out : st.moving.send) {
    st.moved.bytes_sent += static_cast<std::int64_t>(out.data.bytes());
    if (auto sent = ctx.net.send(out.to, out.net_tag, std::move(out.data)); !sent) {
      st.moved.ok = false;
      st.moved.error = rank_name(ctx) + ": expert migration send failed: " + sent.error().message;
      st.migrate_promise.deliver(std::move(st.moved));
      return;
    }
  }
  st.migrate_left = static_cast<int>(st.moving.receive.size());
  if (st.migrate_left == 0) return finish_migrate(self);
  rank_actor handle = self;
  for (std::size_t i = 0; i < st.moving.receive.size(); ++i) {
    const auto& in = st.moving.receive[i];
    ctx.net.receive(in.from, in.net_tag, [handle, i, from = in.from](expected<payload> p) {
      if (p) caf::anon_send(handle, migrate_atom::value, static_cast<std::int32_t>(i), static_cast<std::int32_t>(from), std::move(*p));
      else caf::anon_send(handle, migrate_atom::value, static_cast<std::int32_t>(i), static_cast<std::int32_t>(from), p.error().message);
    });
  }
}

std::string describe_wait(self_ptr self, std::int32_t& action) {
  auto& st = self->state;
  const auto& prog = *st.setup.program;
  action = -1;
  if (!st.active) return "idle";
  std::string out;
  const char* names[2] = {"compute", "comm"};
  const std::vector<int>* queues[2] = {&prog.compute_queue, &prog.comm_queue};
  for (int s = 0; s < 2; ++s) {
    int i = st.running[s] >= 0 ? st.running[s] : (st.head[s] < queues[s]->size() ? (*queues[s])[st.head[s]] : -1);
    if (i < 0) continue;
    const program_op& o = prog.ops[i];
    if (action < 0) action = o.action;
    out += std::string(out.empty() ? "" : "; ") + names[s] + (st.running[s] >= 0 ? " runs " : " waits to start ") +
           to_string(o.kind) + " (chunk " + std::to_string(o.chunk) + " layer " + std::to_string(o.layer) + " microbatch " +
           std::to_string(o.microbatch) + ")";
    if (st.running[s] < 0)
      for (int d : o.deps)
        if (!st.done[d] && prog.ops[d].kind == op_kind::recv) {
          out += ", which needs a pipeline message from rank " + std::to_string(prog.ops[d].peer);
          break;
        }
  }
  return out.empty() ? "nothing left to run" : out;
}

rank_actor::behavior_type driver(self_ptr self, driver_setup setup) {
  auto& st = self->state;
  st.setup = std::move(setup);
  st.sync_groups = build_sync_plan(*st.setup.ctx, st.setup.stage_holders);
  const auto& prog = *st.setup.program;
  st.dependents.assign(prog.ops.size(), {});
  for (std::size_t i = 0; i < prog.ops.size(); ++i)
    for (int d : prog.ops[i].deps) st.dependents[d].push_back(static_cast<int>(i));
  return {
      [self](step_atom, std::int32_t step) -> caf::typed_response_promise<step_report> {
        auto& st = self->state;
        st.step_promise = self->make_response_promise<step_report>();
        start_step(self, step);
        return st.step_promise;
      },
      [self](arrive_atom, std::int32_t i, std::int32_t, payload& p) {
        auto& st = self->state;
        if (!st.active || st.done[i]) return;
        auto& ctx = ctx_of(self);
        const program_op& o = op_at(self, i);
        if (ctx.mode == backend::cuda) {
          if (auto ok = gpu_pipeline_in(ctx, o.chunk, o.microbatch, o.net_tag.kind != traffic::pipeline_activation, std::move(p)); !ok)
            return fail_step(self, rank_name(ctx) + ": " + ok.error().message);
        } else if (ctx.mode != backend::timed) {
          chunk_run& run = ctx.run(o.chunk, o.microbatch);
          if (o.net_tag.kind == traffic::pipeline_activation) run.layers.front().x = std::move(p.f);
          else run.layers.back().dy = std::move(p.f);
        }
        const auto t = ctx.now_ns();
        complete(self, i, t, t);
        pump(self);
      },
      [self](arrive_atom, std::int32_t, std::int32_t peer, std::string error) {
        auto& ctx = ctx_of(self);
        fail_step(self, rank_name(ctx) + ": pipeline receive from rank " + std::to_string(peer) +
                            (ctx.ep.ep > 1 ? " (ep " + std::to_string(ctx.ep_index) + ")" : "") + " failed: " + error);
      },
      [self](sync_atom, std::int32_t) -> caf::typed_response_promise<sync_report> {
        self->state.sync_promise = self->make_response_promise<sync_report>();
        start_sync(self);
        return self->state.sync_promise;
      },
      // payload& (not a copy): the message is ours alone, so CAF hands over its content without copying it.
      [self](sync_atom, std::int32_t group, std::int32_t from, payload& p) { on_sync_payload(self, group, from, std::move(p)); },
      [self](sync_atom, std::int32_t, std::int32_t from, std::string error) {
        auto& ctx = ctx_of(self);
        self->state.sync_promise.deliver(sync_report{ctx.global_rank, false,
                                                     rank_name(ctx) + ": gradient sum with rank " + std::to_string(from) +
                                                         " failed: " + error,
                                                     0});
      },
      [self](migrate_atom, migrate_request req) -> caf::typed_response_promise<migrate_report> {
        self->state.migrate_promise = self->make_response_promise<migrate_report>();
        start_migrate(self, req);
        return self->state.migrate_promise;
      },
      [self](migrate_atom, std::int32_t i, std::int32_t, payload p) {
        auto& st = self->state;
        if (auto ok = fill_slot(ctx_of(self), st.moving.receive[i], std::move(p)); !ok) {
          st.moved.ok = false;
          st.moved.error = rank_name(ctx_of(self)) + ": " + ok.error().message;
        }
        if (--st.migrate_left == 0) {
          if (st.moved.ok) finish_migrate(self);
          else st.migrate_promise.deliver(std::move(st.moved));
        }
      },
      [self](migrate_atom, std::int32_t, std::int32_t from, std::string error) {
        auto& st = self->state;
        st.moved.ok = false;
        st.moved.error = rank_name(ctx_of(self)) + ": expert migration from rank " + std::to_string(from) + " failed: " + error;
        st.migrate_promise.deliver(std::move(st.moved));
      },
      [self](apply_atom, apply_request req) -> caf::result<bool> {
        apply_update(self, req);
        auto& ctx = ctx_of(self);
        if (ctx.mode == backend::cuda)  // the new values go up to the GPU
          if (auto ok = gpu_upload(ctx); !ok)
            return caf::make_error(caf::sec::runtime_error, rank_name(ctx) + ": " + ok.error().message);
        return true;
      },
      [self](status_atom) {
        rank_status s;
        s.rank = ctx_of(self).global_rank;
        s.progress = self->state.progress;
        s.waiting = describe_wait(self, s.action);
        return s;
      },
      [self](grads_atom) {
        tensor_dump d;
        for (const auto& c : ctx_of(self).chunks)
          for (const auto& p : c.params->all()) {
            d.names.push_back(p.name);
            d.grads.push_back(p.grad);
            d.values.push_back(p.value);
          }
        return d;
      },
  };
}

}  // namespace

rank_actor spawn_rank_driver(caf::actor_system& sys, driver_setup setup) { return sys.spawn(driver, std::move(setup)); }

}  // namespace loom::actors
