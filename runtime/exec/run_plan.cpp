#include "runtime/exec/run_plan.hpp"

#include "actors/component_actor.hpp"
#include "actors/cuda_backend.hpp"
#include "actors/rank_driver.hpp"

namespace loom::exec {

namespace {

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

}  // namespace

expected<run_plan> make_run_plan(const experiment& e, const schedule::schedule& s) {
  if (auto ok = check_experiment(e, s); !ok) return unexpected(ok.error());
  run_plan p;
  p.e = &e;
  p.s = &s;
  p.stages = schedule::logical_stages(s);
  p.layers_per_chunk = e.model.layers / p.stages;
  p.world = e.pp * e.ep;
  p.lowered = lower::lower(s, {p.layers_per_chunk, e.costs.comm_sms});
  p.shape = shape_of(e.model);
  // The experiment's expert policy, or the schedule's `experts` block.
  p.policy = e.experts;
  if (!e.have_experts && s.experts) {
    p.policy.redundant = s.experts->redundant;
    p.policy.replan_every = s.experts->replan_interval;
    p.policy.window = s.experts->window;
    p.policy.planner = s.experts->planner;
  }
  p.balancer = std::make_shared<expert_balancer>(p.policy, e.model.layers, e.model.experts, e.ep);
  p.placements.assign(e.model.layers, model::slot_map::identity(e.model.experts, e.ep));
  if (p.policy.enabled()) {
    auto planned = p.balancer->initial();
    if (!planned) return unexpected(errc::invalid_experiment, (e.path.empty() ? e.name : e.path) + ": " + planned.error().message);
    p.placements = std::move(*planned);
  }
  p.stage_holders.assign(p.stages, {});
  for (int r = 0; r < e.pp; ++r)
    for (const auto& ref : s.placement[r]) p.stage_holders[ref.stage].push_back(r);
  p.total_tokens = static_cast<double>(s.total_microbatches()) * e.microbatch_size * e.model.seq_len;
  return p;
}

std::shared_ptr<actors::rank_context> make_rank_context(const run_plan& p, int rank, actors::transport net,
                                                       const std::optional<injected_fault>& fault) {
  const experiment& e = *p.e;
  const int r = rank / e.ep, q = rank % e.ep;
  auto ctx = std::make_shared<actors::rank_context>();
  ctx->pipeline_rank = r;
  ctx->ep_index = q;
  ctx->global_rank = rank;
  ctx->shape = p.shape;
  ctx->ep = {e.ep, q};
  ctx->layers_per_chunk = p.layers_per_chunk;
  ctx->seqs = e.microbatch_size / e.ep;
  ctx->seed = e.seed;
  ctx->total_tokens = p.total_tokens;
  ctx->net = std::move(net);
  ctx->mode = e.backend == backend_kind::timed  ? actors::backend::timed
              : e.backend == backend_kind::cuda ? actors::backend::cuda
                                                : actors::backend::cpu;
  ctx->timed_ms = timed_costs(e.costs);
  ctx->sms_total = e.costs.sms_total;
  for (const auto& ref : p.s->placement[r]) {
    actors::chunk_info c;
    c.pipeline = ref.pipeline;
    c.stage = ref.stage;
    c.first_layer = ref.stage * p.layers_per_chunk;
    c.microbatch_offset = p.s->global_microbatch(ref.pipeline, 0);
    c.first_stage = ref.stage == 0;
    c.last_stage = ref.stage == p.stages - 1;
    std::vector<std::vector<int>> local_experts;
    for (int l = 0; l < p.layers_per_chunk; ++l) {
      c.slots.push_back(p.placements[c.first_layer + l]);
      local_experts.push_back(c.slots.back().local_experts(q));
    }
    c.params = std::make_unique<model::param_set>(p.shape, local_experts, c.first_layer, p.layers_per_chunk, c.first_stage,
                                                  c.last_stage, e.seed);
    ctx->chunks.push_back(std::move(c));
  }
  if (fault && fault->rank == rank) ctx->inject = actors::fault{static_cast<std::uint8_t>(fault->kind), fault->microbatch, fault->hang};
  return ctx;
}

expected<void> attach_device(const run_plan& p, actors::rank_context& ctx, std::shared_ptr<actors::device_gpu>& gpu) {
  if (p.e->backend != backend_kind::cuda) return {};
  if (!gpu) {
    const int gpus = actors::gpu_count();
    auto opened = actors::open_gpu(gpus > 0 ? ctx.global_rank % gpus : 0);
    if (!opened) return unexpected(opened.error());
    gpu = std::move(*opened);
  }
  return actors::attach_gpu(ctx, gpu, static_cast<int>(p.lowered.ranks[ctx.pipeline_rank].ops.size()));
}

spawned_rank spawn_rank(caf::actor_system& sys, const run_plan& p, std::shared_ptr<actors::rank_context> ctx) {
  const experiment& e = *p.e;
  spawned_rank out;
  actors::driver_setup ds;
  ds.ctx = ctx;
  ds.program = std::make_shared<actors::rank_program>(p.lowered.ranks[ctx->pipeline_rank]);
  for (std::size_t c = 0; c < ctx->chunks.size(); ++c) {
    std::array<actors::component_actor, 4> comps;
    for (int role = 0; role < 4; ++role) {
      comps[role] = actors::spawn_component(sys, ctx, static_cast<actors::component_role>(role));
      out.components.push_back(caf::actor_cast<caf::actor>(comps[role]));
    }
    ds.components.push_back(comps);
    for (int l = 0; l < p.layers_per_chunk; ++l) out.logical_layers.push_back(ctx->chunks[c].first_layer + l);
  }
  ds.stage_holders = p.stage_holders;
  ds.adamw = {e.optimizer.lr, e.optimizer.beta1, e.optimizer.beta2, e.optimizer.eps, e.optimizer.weight_decay};
  ds.bias_update_rate = e.model.gating == gating_kind::sigmoid ? e.model.bias_update_rate : 0.f;
  ds.logical_layers = e.model.layers;
  out.driver = actors::spawn_rank_driver(sys, std::move(ds));
  return out;
}

actors::coordinator_setup make_coordinator_setup(const run_plan& p, const std::vector<spawned_rank>& ranks,
                                                 std::function<void(const step_progress&)> on_step) {
  const experiment& e = *p.e;
  actors::coordinator_setup cs;
  cs.steps = e.steps;
  cs.watchdog_seconds = e.watchdog_seconds;
  cs.logical_layers = e.model.layers;
  cs.experts = e.model.experts;
  cs.send_load = e.model.gating == gating_kind::sigmoid && e.backend != backend_kind::timed;
  if (p.policy.replan_every > 0 && e.backend != backend_kind::timed)
    cs.replan = [b = p.balancer](int step, const std::vector<double>& load) { return b->after_step(step, load); };
  for (const auto& r : ranks) {
    cs.ranks.push_back(r.driver);
    cs.others.insert(cs.others.end(), r.components.begin(), r.components.end());
    cs.logical_layer.push_back(r.logical_layers);
  }
  cs.rank_name = [ep = e.ep](int g) {
    return "rank " + std::to_string(g / ep) + (ep > 1 ? " (ep " + std::to_string(g % ep) + ")" : "");
  };
  cs.describe = [s = p.s, ep = e.ep](const actors::rank_status& st) {
    std::string who = "rank " + std::to_string(st.rank / ep) + (ep > 1 ? " (ep " + std::to_string(st.rank % ep) + ")" : "");
    std::string action;
    const int r = st.rank / ep;
    if (st.action >= 0 && st.action < static_cast<int>(s->programs[r].size()))
      action = " at " + schedule::to_string(s->programs[r][st.action]);
    return who + action + ": " + st.waiting;
  };
  cs.on_step = [on_step = std::move(on_step), steps = e.steps, tokens = p.total_tokens](int step, const actors::step_outcome& so) {
    if (!on_step) return;
    step_progress pr;
    pr.step = step;
    pr.steps = steps;
    pr.loss = so.loss_sum / tokens;
    pr.grad_norm = so.grad_norm;
    pr.seconds = static_cast<double>(so.wall_ns) * 1e-9;
    on_step(pr);
  };
  return cs;
}

void summarize(const run_plan& p, run_result& r) {
  r.ok = r.outcome.ok;
  r.error = r.outcome.error;
  r.ep = p.e->ep;
  r.layers_per_chunk = p.layers_per_chunk;
  r.loss.clear();
  r.grad_norm.clear();
  for (const auto& st : r.outcome.steps) {
    if (p.e->backend != backend_kind::timed) r.loss.push_back(st.loss_sum / p.total_tokens);
    r.grad_norm.push_back(st.grad_norm);
  }
  r.replans = p.balancer->history();
}

void register_runtime_types(caf::actor_system_config& cfg) {
  actors::register_message_types(cfg);
  actors::register_coordinator_types(cfg);
}

}  // namespace loom::exec
