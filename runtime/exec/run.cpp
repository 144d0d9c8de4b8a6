#include "runtime/exec/run.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

#include "runtime/exec/run_plan.hpp"
#include "kernels/cpu/gemm.hpp"
#include "runtime/transport/local_transport.hpp"

namespace loom::exec {

namespace {

unexpected refuse(const experiment& e, const std::string& why) {
  return unexpected(errc::invalid_experiment, (e.path.empty() ? e.name : e.path) + ": " + why);
}

struct runtime_config : caf::actor_system_config {
  explicit runtime_config(int threads) {
    register_runtime_types(*this);
    if (threads > 0) set("scheduler.max-threads", static_cast<std::int64_t>(threads));
  }
};

}  // namespace

void collect_tensors(caf::scoped_actor& self, const std::vector<spawned_rank>& ranks, run_result& result);

expected<void> check_experiment(const experiment& e, const schedule::schedule& s) {
  const int stages = schedule::logical_stages(s);
  if (e.pp != s.ranks())
    return refuse(e, "parallel.pp = " + std::to_string(e.pp) + " but schedule '" + s.name + "' has " + std::to_string(s.ranks()) +
                         " ranks (set both, or leave schedule.ranks to follow pp)");
  if (stages > 1024 || s.pipelines.size() > 16 || e.model.layers > 1024)
    return refuse(e, "the runtime tags messages with at most 1024 stages, 16 pipelines and 1024 layers");
  if (stages <= 0 || e.model.layers % stages != 0)
    return refuse(e, "model.layers = " + std::to_string(e.model.layers) + " cannot be split over the " + std::to_string(stages) +
                         " stages of schedule '" + s.name + "' (it must be a multiple)");
  if (e.model.hidden % e.model.heads != 0) return refuse(e, "model.hidden is not divisible by model.heads");
  if (e.model.experts % e.ep != 0 && !e.experts.enabled() && !s.experts)
    return refuse(e, "model.experts is not divisible by parallel.ep");
  if (e.microbatch_size % e.ep != 0) return refuse(e, "batch.microbatch_size is not divisible by parallel.ep");
  if (e.model.top_k > e.model.experts) return refuse(e, "model.top_k exceeds model.experts");
  if (e.backend == backend_kind::cuda) {
    // What the GPU kernels take (kernels/cuda/attention.hpp, grouped_gemm.hpp): tensor-core tiles.
    const int head_dim = e.model.hidden / e.model.heads;
    if (head_dim != 64 && head_dim != 128)
      return refuse(e, "the cuda backend needs model.hidden / model.heads = 64 or 128 (it is " + std::to_string(head_dim) + ")");
    for (auto [name, v] : {std::pair{"model.hidden", e.model.hidden}, std::pair{"model.expert_ffn", e.model.expert_ffn},
                           std::pair{"model.shared_ffn", e.model.shared_ffn}, std::pair{"model.vocab", e.model.vocab},
                           std::pair{"model.experts", e.model.experts}})
      if (v % 8 != 0) return refuse(e, std::string("the cuda backend needs ") + name + " to be a multiple of 8 (it is " + std::to_string(v) + ")");
  }
  if (e.backend == backend_kind::timed && !e.have_costs)
    return refuse(e, "the timed backend needs a [costs] table (milliseconds per component and layer)");
  return {};
}

expected<run_result> run_experiment(const experiment& e, const schedule::schedule& s, const run_options& opt) {
  auto plan = make_run_plan(e, s);
  if (!plan) return unexpected(plan.error());
  const auto t0 = std::chrono::steady_clock::now();
  run_result result;
  result.lowered = plan->lowered;
  auto net = transport::make_local_transport(plan->world);

  // The threads that run actors: the component actors compute in their handlers, so more threads
  // than cores only adds contention; and BLAS runs single-threaded inside them for the same reason.
  kernels::cpu::set_blas_threads(1);
  const int threads = e.cpu_threads > 0 ? e.cpu_threads : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  runtime_config cfg(threads);
  caf::actor_system sys{cfg};

  // The cuda backend: every virtual rank on GPU 0 of this process.
  std::shared_ptr<actors::device_gpu> gpu;
  std::vector<spawned_rank> ranks;
  for (int g = 0; g < plan->world; ++g) {
    auto ctx = make_rank_context(*plan, g, transport::local_handle(net, g), opt.fault);
    if (auto ok = attach_device(*plan, *ctx, gpu); !ok) return unexpected(ok.error());
    ranks.push_back(spawn_rank(sys, *plan, std::move(ctx)));
  }
  auto cs = make_coordinator_setup(*plan, ranks, opt.on_step);
  cs.on_abort = [net](const loom::error& why) { transport::local_handle(net, 0).abort(why); };
  auto coord = actors::spawn_coordinator(sys, std::move(cs));
  {
    caf::scoped_actor self{sys};
    self->request(coord, caf::infinite, actors::run_atom::value)
        .receive([&](actors::run_outcome o) { result.outcome = std::move(o); },
                 [&](caf::error& err) {
                   result.outcome.ok = false;
                   result.outcome.error = "the coordinator failed: " + sys.render(err);
                 });
    if (result.outcome.ok && opt.collect_tensors) collect_tensors(self, ranks, result);
    for (auto& r : ranks) {
      self->send_exit(r.driver, caf::exit_reason::user_shutdown);
      for (auto& a : r.components) self->send_exit(a, caf::exit_reason::user_shutdown);
    }
    self->send_exit(coord, caf::exit_reason::user_shutdown);
  }
  summarize(*plan, result);
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

void collect_tensors(caf::scoped_actor& self, const std::vector<spawned_rank>& ranks, run_result& result) {
  for (auto& r : ranks)
    self->request(r.driver, std::chrono::seconds(60), actors::grads_atom::value)
        .receive(
            [&](actors::tensor_dump d) {
              for (std::size_t i = 0; i < d.names.size(); ++i) {
                result.grads.emplace(d.names[i], std::move(d.grads[i]));
                result.values.emplace(d.names[i], std::move(d.values[i]));
              }
            },
            [&](caf::error&) {});
}

}  // namespace loom::exec
