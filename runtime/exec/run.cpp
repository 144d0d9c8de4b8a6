#include "runtime/exec/run.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "actors/component_actor.hpp"
#include "actors/rank_driver.hpp"
#include "kernels/cpu/gemm.hpp"
#include "runtime/transport/local_transport.hpp"

namespace loom::exec {

namespace {

unexpected refuse(const experiment& e, const std::string& why) {
  return unexpected(errc::invalid_experiment, (e.path.empty() ? e.name : e.path) + ": " + why);
}

model::model_shape shape_of(const model_config& m) {
  model::model_shape s;
  s.hidden = m.hidden;
  s.heads = m.heads;
  s.experts = m.experts;
  s.top_k = m.top_k;
  s.expert_ffn = m.expert_ffn;
  s.shared_ffn = m.shared_ffn;
  s.vocab = m.vocab;
  s.seq_len = m.seq_len;
  s.gate = m.gating == gating_kind::sigmoid ? model::gating::sigmoid : model::gating::softmax;
  s.norm_eps = m.norm_eps;
  s.init_scale = m.init_scale;
  s.router_skew = m.router_skew;
  return s;
}

// Timed backend: the duration of each op kind, from the cost table.
std::vector<double> timed_costs(const sim::component_costs& c) {
  using actors::op_kind;
  std::vector<double> ms(actors::op_kind_count, 0.0);
  ms[static_cast<int>(op_kind::attn_f)] = c.attn;
  ms[static_cast<int>(op_kind::dispatch_f)] = c.dispatch;
  ms[static_cast<int>(op_kind::mlp_f)] = c.mlp;
  ms[static_cast<int>(op_kind::combine_f)] = c.combine;
  ms[static_cast<int>(op_kind::combine_b)] = c.combine_b;
  ms[static_cast<int>(op_kind::mlp_b)] = c.mlp_b;
  ms[static_cast<int>(op_kind::dispatch_b)] = c.dispatch_b;
  ms[static_cast<int>(op_kind::attn_b)] = c.attn_b;
  ms[static_cast<int>(op_kind::mlp_w)] = c.mlp_w;
  ms[static_cast<int>(op_kind::attn_w)] = c.attn_w;
  return ms;
}

struct runtime_config : caf::actor_system_config {
  explicit runtime_config(int threads) {
    actors::register_message_types(*this);
    actors::register_coordinator_types(*this);
    if (threads > 0) set("scheduler.max-threads", static_cast<std::int64_t>(threads));
  }
};

}  // namespace

expected<void> check_experiment(const experiment& e, const schedule::schedule& s) {
  const int stages = schedule::logical_stages(s);
  if (e.pp != s.ranks())
    return refuse(e, "parallel.pp = " + std::to_string(e.pp) + " but schedule '" + s.name + "' has " + std::to_string(s.ranks()) +
                         " ranks (set both, or leave schedule.ranks to follow pp)");
  if (stages <= 0 || e.model.layers % stages != 0)
    return refuse(e, "model.layers = " + std::to_string(e.model.layers) + " cannot be split over the " + std::to_string(stages) +
                         " stages of schedule '" + s.name + "' (it must be a multiple)");
  if (e.model.hidden % e.model.heads != 0) return refuse(e, "model.hidden is not divisible by model.heads");
  if (e.model.experts % e.ep != 0 && !e.experts.enabled() && !s.experts)
    return refuse(e, "model.experts is not divisible by parallel.ep");
  if (e.microbatch_size % e.ep != 0) return refuse(e, "batch.microbatch_size is not divisible by parallel.ep");
  if (e.model.top_k > e.model.experts) return refuse(e, "model.top_k exceeds model.experts");
  if (e.backend == backend_kind::cuda) return unexpected(errc::unavailable, "the cuda backend is not part of this build's embedded runner");
  if (e.backend == backend_kind::timed && !e.have_costs)
    return refuse(e, "the timed backend needs a [costs] table (milliseconds per component and layer)");
  return {};
}

expected<run_result> run_experiment(const experiment& e, const schedule::schedule& s, const run_options& opt) {
  if (auto ok = check_experiment(e, s); !ok) return unexpected(ok.error());
  const auto t0 = std::chrono::steady_clock::now();
  const int stages = schedule::logical_stages(s);
  const int Lc = e.model.layers / stages;
  const int world = e.pp * e.ep;

  run_result result;
  result.ep = e.ep;
  result.layers_per_chunk = Lc;
  result.lowered = lower::lower(s, {Lc, e.costs.comm_sms});
  auto net = transport::make_local_transport(world);

  const model::model_shape shape = shape_of(e.model);
  // The experiment's expert policy, or the schedule's `experts` block.
  expert_policy_config policy = e.experts;
  if (!e.have_experts && s.experts) {
    policy.redundant = s.experts->redundant;
    policy.replan_every = s.experts->replan_interval;
    policy.window = s.experts->window;
    policy.planner = s.experts->planner;
  }
  auto balancer = std::make_shared<expert_balancer>(policy, e.model.layers, e.model.experts, e.ep);
  std::vector<model::slot_map> placements(e.model.layers, model::slot_map::identity(e.model.experts, e.ep));
  if (policy.enabled()) {
    auto planned = balancer->initial();
    if (!planned) return unexpected(errc::invalid_experiment, (e.path.empty() ? e.name : e.path) + ": " + planned.error().message);
    placements = std::move(*planned);
  }
  const double total_tokens = static_cast<double>(s.total_microbatches()) * e.microbatch_size * e.model.seq_len;
  std::vector<std::shared_ptr<actors::rank_context>> ctxs;
  for (int r = 0; r < e.pp; ++r)
    for (int q = 0; q < e.ep; ++q) {
      auto ctx = std::make_shared<actors::rank_context>();
      ctx->pipeline_rank = r;
      ctx->ep_index = q;
      ctx->global_rank = r * e.ep + q;
      ctx->shape = shape;
      ctx->ep = {e.ep, q};
      ctx->layers_per_chunk = Lc;
      ctx->seqs = e.microbatch_size / e.ep;
      ctx->seed = e.seed;
      ctx->total_tokens = total_tokens;
      ctx->net = transport::local_handle(net, ctx->global_rank);
      ctx->mode = e.backend == backend_kind::timed ? actors::backend::timed : actors::backend::cpu;
      ctx->timed_ms = timed_costs(e.costs);
      ctx->sms_total = e.costs.sms_total;
      for (const auto& ref : s.placement[r]) {
        actors::chunk_info c;
        c.pipeline = ref.pipeline;
        c.stage = ref.stage;
        c.first_layer = ref.stage * Lc;
        c.microbatch_offset = s.global_microbatch(ref.pipeline, 0);
        c.first_stage = ref.stage == 0;
        c.last_stage = ref.stage == stages - 1;
        std::vector<std::vector<int>> local_experts;
        for (int l = 0; l < Lc; ++l) {
          c.slots.push_back(placements[c.first_layer + l]);
          local_experts.push_back(c.slots.back().local_experts(q));
        }
        c.params = std::make_unique<model::param_set>(shape, local_experts, c.first_layer, Lc, c.first_stage, c.last_stage, e.seed);
        ctx->chunks.push_back(std::move(c));
      }
      if (opt.fault && opt.fault->rank == ctx->global_rank)
        ctx->inject = actors::fault{static_cast<std::uint8_t>(opt.fault->kind), opt.fault->microbatch, opt.fault->hang};
      ctxs.push_back(std::move(ctx));
    }
  std::vector<std::vector<int>> stage_holders(stages);
  for (int r = 0; r < e.pp; ++r)
    for (const auto& ref : s.placement[r]) stage_holders[ref.stage].push_back(r);

  // The threads that run actors: the component actors compute in their handlers, so more threads
  // than cores only adds contention; and BLAS runs single-threaded inside them for the same reason.
  kernels::cpu::set_blas_threads(1);
  const int threads = e.cpu_threads > 0 ? e.cpu_threads : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  runtime_config cfg(threads);
  caf::actor_system sys{cfg};

  actors::coordinator_setup cs;
  cs.steps = e.steps;
  cs.watchdog_seconds = e.watchdog_seconds;
  cs.logical_layers = e.model.layers;
  cs.experts = e.model.experts;
  cs.send_load = e.model.gating == gating_kind::sigmoid && e.backend != backend_kind::timed;
  if (policy.replan_every > 0 && e.backend != backend_kind::timed)
    cs.replan = [balancer](int step, const std::vector<double>& load) { return balancer->after_step(step, load); };
  for (int g = 0; g < world; ++g) {
    auto program = std::make_shared<actors::rank_program>(result.lowered.ranks[g / e.ep]);
    actors::driver_setup ds;
    ds.ctx = ctxs[g];
    ds.program = program;
    for (std::size_t c = 0; c < ctxs[g]->chunks.size(); ++c) {
      std::array<actors::component_actor, 4> comps;
      for (int role = 0; role < 4; ++role) {
        comps[role] = actors::spawn_component(sys, ctxs[g], static_cast<actors::component_role>(role));
        cs.others.push_back(caf::actor_cast<caf::actor>(comps[role]));
      }
      ds.components.push_back(comps);
    }
    ds.stage_holders = stage_holders;
    ds.adamw = {e.optimizer.lr, e.optimizer.beta1, e.optimizer.beta2, e.optimizer.eps, e.optimizer.weight_decay};
    ds.bias_update_rate = e.model.gating == gating_kind::sigmoid ? e.model.bias_update_rate : 0.f;
    ds.logical_layers = e.model.layers;
    cs.ranks.push_back(actors::spawn_rank_driver(sys, std::move(ds)));
    std::vector<int> layers;
    for (const auto& c : ctxs[g]->chunks)
      for (int l = 0; l < Lc; ++l) layers.push_back(c.first_layer + l);
    cs.logical_layer.push_back(std::move(layers));
  }
  cs.describe = [&s, &result, ep = e.ep](const actors::rank_status& st) {
    std::string who = "rank " + std::to_string(st.rank / ep) + (ep > 1 ? " (ep " + std::to_string(st.rank % ep) + ")" : "");
    std::string action;
    const int r = st.rank / ep;
    if (st.action >= 0 && st.action < static_cast<int>(s.programs[r].size()))
      action = " at " + schedule::to_string(s.programs[r][st.action]);
    return who + action + ": " + st.waiting;
  };
  cs.on_abort = [net](const loom::error& why) { transport::local_handle(net, 0).abort(why); };
  cs.on_step = [&](int step, const actors::step_outcome& so) {
    if (!opt.on_step) return;
    step_progress p;
    p.step = step;
    p.steps = e.steps;
    p.loss = so.loss_sum / total_tokens;
    p.grad_norm = so.grad_norm;
    p.seconds = static_cast<double>(so.wall_ns) * 1e-9;
    opt.on_step(p);
  };

  std::vector<actors::rank_actor> ranks = cs.ranks;
  std::vector<caf::actor> others = cs.others;
  auto coord = actors::spawn_coordinator(sys, std::move(cs));
  {
    caf::scoped_actor self{sys};
    self->request(coord, caf::infinite, actors::run_atom::value)
        .receive([&](actors::run_outcome o) { result.outcome = std::move(o); },
                 [&](caf::error& err) {
                   result.outcome.ok = false;
                   result.outcome.error = "the coordinator failed: " + sys.render(err);
                 });
    if (result.outcome.ok && opt.collect_tensors) {
      for (auto& r : ranks)
        self->request(r, std::chrono::seconds(60), actors::grads_atom::value)
            .receive(
                [&](actors::tensor_dump d) {
                  for (std::size_t i = 0; i < d.names.size(); ++i) {
                    result.grads.emplace(d.names[i], std::move(d.grads[i]));
                    result.values.emplace(d.names[i], std::move(d.values[i]));
                  }
                },
                [&](caf::error&) {});
    }
    for (auto& r : ranks) self->send_exit(r, caf::exit_reason::user_shutdown);
    for (auto& a : others) self->send_exit(a, caf::exit_reason::user_shutdown);
    self->send_exit(coord, caf::exit_reason::user_shutdown);
  }
  result.ok = result.outcome.ok;
  result.error = result.outcome.error;
  for (const auto& st : result.outcome.steps) {
    if (e.backend != backend_kind::timed) result.loss.push_back(st.loss_sum / total_tokens);
    result.grad_norm.push_back(st.grad_norm);
  }
  result.replans = balancer->history();
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace loom::exec
