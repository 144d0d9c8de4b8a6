#include "runtime/cluster/cluster_run.hpp"

#include <caf/io/all.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include "kernels/cpu/gemm.hpp"
#include "loom/version.hpp"
#include "dsl/experiment_file.hpp"
#include "runtime/daemon/bundle_check.hpp"
#include "runtime/exec/run_plan.hpp"
#include "actors/cuda_backend.hpp"
#include "runtime/transport/nccl_transport.hpp"
#include "runtime/transport/ucx_transport.hpp"

namespace loom::cluster {

namespace {

struct cluster_config : caf::actor_system_config {
  explicit cluster_config(double peer_timeout_seconds) {
    register_cluster_types(*this);
    load<caf::io::middleman>();
    set("scheduler.max-threads", static_cast<std::int64_t>(std::max(2u, std::thread::hardware_concurrency())));
    // Heartbeats on every connection, and a peer silent for the timeout is dropped: its actors go
    // down (remote_link_unreachable) as if its process had died, also when no TCP reset comes (a
    // cut link, a host that froze). The coordinator then fails the run naming the rank, and a
    // worker whose rank 0 is gone stops.
    const auto timeout = std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(peer_timeout_seconds));
    set("middleman.heartbeat-interval", caf::timespan{std::min(timeout / 4, caf::timespan{std::chrono::seconds(1)})});
    set("middleman.connection-timeout", timeout);
  }
};

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string to_bytes(const std::vector<std::uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<std::uint8_t> from_bytes(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

// --- the registry: hands out ranks and the experiment, gathers ready ranks and their addresses ---

struct registry_state {
  experiment_bundle bundle;
  int world = 1;
  std::vector<bool> taken;
  std::map<int, ready_request> ready;
  std::vector<caf::typed_response_promise<ready_reply>> waiting_ready;
  int connected = 0;
  std::vector<caf::typed_response_promise<bool>> waiting_go;
  static inline const char* name = "loom.registry";
};

registry_actor::behavior_type registry(registry_actor::stateful_pointer<registry_state> self, experiment_bundle bundle, int world) {
  self->state.bundle = std::move(bundle);
  self->state.world = world;
  self->state.taken.assign(world, false);
  self->state.taken[0] = true;  // rank 0 is this process
  return {
      [self](join_atom, join_request req) -> join_reply {
        auto& st = self->state;
        join_reply out;
        if (req.version != loom::version || req.protocol != protocol_version) {
          out.ok = false;
          out.error = "version mismatch: this run is loom " + std::string(loom::version) + " (protocol " +
                      std::to_string(protocol_version) + "), the worker on " + req.host + " is " + req.version + " (protocol " +
                      std::to_string(req.protocol) + ")";
          return out;
        }
        int rank = req.rank;
        if (rank < 0)
          for (int r = 1; r < st.world && rank < 0; ++r)
            if (!st.taken[r]) rank = r;
        if (rank <= 0 || rank >= st.world || st.taken[rank]) {
          out.ok = false;
          out.error = req.rank < 0 ? "the run has no free rank: all " + std::to_string(st.world) + " are taken"
                                   : "rank " + std::to_string(req.rank) + " is taken or outside 1.." + std::to_string(st.world - 1);
          return out;
        }
        st.taken[rank] = true;
        out.rank = rank;
        out.world = st.world;
        out.bundle = st.bundle;
        return out;
      },
      [self](ready_atom, ready_request req) -> caf::typed_response_promise<ready_reply> {
        auto& st = self->state;
        auto rp = self->make_response_promise<ready_reply>();
        st.waiting_ready.push_back(rp);
        st.ready[req.rank] = std::move(req);
        if (static_cast<int>(st.ready.size()) == st.world) {
          ready_reply all;
          for (const auto& [rank, r] : st.ready) all.ranks.push_back(r);
          for (auto& w : st.waiting_ready) w.deliver(all);
          st.waiting_ready.clear();
        }
        return rp;
      },
      [self](connected_atom, std::int32_t) -> caf::typed_response_promise<bool> {
        auto& st = self->state;
        auto rp = self->make_response_promise<bool>();
        st.waiting_go.push_back(rp);
        if (++st.connected == st.world) {
          for (auto& w : st.waiting_go) w.deliver(true);
          st.waiting_go.clear();
        }
        return rp;
      },
  };
}

}  // namespace

expected<loaded_run> load_bundle(const experiment_bundle& bundle) {
  if (auto ok = daemon::check_limits(bundle); !ok) return unexpected(ok.error());
  const std::string file = bundle.experiment_name.empty() ? "experiment.toml" : bundle.experiment_name;
  auto e = dsl::parse_experiment(bundle.experiment_text, file, ".", daemon::run_overrides(bundle, ""));
  if (!e) return unexpected(e.error());
  dsl::load_request req;
  req.path = e->schedule_file;
  for (const auto& [k, v] : e->schedule_params) req.set[k] = v;
  auto s = dsl::load_schedule(req, daemon::bundle_reader(bundle));
  if (!s) return unexpected(s.error());
  return loaded_run{std::move(*e), std::move(*s)};
}

std::pair<int, int> launcher_rank() {
  auto get = [](const char* name) -> int {
    const char* v = std::getenv(name);
    return v ? std::atoi(v) : -1;
  };
  const std::pair<const char*, const char*> vars[] = {{"LOOM_RANK", "LOOM_WORLD"},
                                                      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                                      {"PMI_RANK", "PMI_SIZE"},
                                                      {"SLURM_PROCID", "SLURM_NTASKS"}};
  for (const auto& [rank, size] : vars)
    if (get(rank) >= 0 && get(size) > 0) return {get(rank), get(size)};
  return {-1, 0};
}

namespace {

// What both rank 0 and the workers do once they know their rank: build it on a UCX transport.
struct local_rank {
  std::shared_ptr<void> net;
  actors::transport handle;  // ucx, or nccl for GPU runs with a GPU per process
  exec::spawned_rank spawned;
};

// The data plane of a rank: `ucx`, or `nccl` with LOOM_DATA_PLANE=nccl (cuda backend, a GPU per process;
// every process of a run must choose the same). nccl is opt-in until it has run on a multi-GPU machine:
// its first run there did not finish (docs/GPU.md).
expected<local_rank> make_data_plane(const exec::run_plan& plan, int rank) {
  const char* forced = std::getenv("LOOM_DATA_PLANE");
  const std::string choice = forced ? forced : "";
  if (!choice.empty() && choice != "ucx" && choice != "nccl")
    return unexpected(errc::invalid_argument, "LOOM_DATA_PLANE must be ucx or nccl, not '" + choice + "'");
  const int gpus = actors::gpu_count();
  const bool nccl = choice == "nccl";
  if (nccl && plan.e->backend != exec::backend_kind::cuda)
    return unexpected(errc::invalid_argument, "LOOM_DATA_PLANE=nccl needs backend = \"cuda\"");
  local_rank out;
  if (nccl) {
    auto net = transport::make_nccl_transport(rank, plan.world, gpus > 0 ? rank % gpus : 0);
    if (!net) return unexpected(net.error());
    out.net = *net;
    out.handle = transport::nccl_handle(out.net);
  } else {
    auto net = transport::make_ucx_transport(rank, plan.world);
    if (!net) return unexpected(net.error());
    out.net = *net;
    out.handle = transport::ucx_handle(out.net);
  }
  return out;
}

void close_data_plane(const local_rank& lr) {
  if (std::string(lr.handle.name()) == "nccl") transport::nccl_close(lr.net);
  else transport::ucx_close(lr.net);
}

expected<local_rank> build_rank(caf::actor_system& sys, const exec::run_plan& plan, int rank) {
  auto made = make_data_plane(plan, rank);
  if (!made) return unexpected(made.error());
  local_rank out = std::move(*made);
  kernels::cpu::set_blas_threads(1);
  auto ctx = exec::make_rank_context(plan, rank, out.handle);
  std::shared_ptr<actors::device_gpu> gpu;  // cuda backend: GPU rows leave the process through the data plane
  if (auto ok = exec::attach_device(plan, *ctx, gpu); !ok) return unexpected(ok.error());
  out.spawned = exec::spawn_rank(sys, plan, std::move(ctx));
  return out;
}

ready_request ready_of(int rank, const local_rank& lr, caf::actor listener) {
  ready_request r;
  r.rank = rank;
  r.address = to_bytes(lr.handle.address());
  r.driver = lr.spawned.driver;
  r.components = lr.spawned.components;
  r.components.push_back(std::move(listener));  // the process's listener: told when to finish
  r.logical_layers.assign(lr.spawned.logical_layers.begin(), lr.spawned.logical_layers.end());
  r.host = hostname();
  r.pid = static_cast<std::int64_t>(::getpid());
  return r;
}

std::string rank_name(int global_rank, int ep) {
  return "rank " + std::to_string(global_rank / ep) + (ep > 1 ? " (ep " + std::to_string(global_rank % ep) + ")" : "");
}

// After a failed run: the worker processes that went away (their listeners, monitored, are down).
// A lost process shows in the data plane (a receive fails) and in the control plane (its actors go
// down) at about the same time; whichever reached the coordinator first, the error then names the
// rank whose process is gone. Waits up to two seconds for the first loss.
void name_lost_processes(caf::scoped_actor& self, const std::map<caf::actor_addr, ready_request>& process_of, int ep,
                         std::string& error) {
  std::string lost;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (!lost.empty()) left = std::chrono::milliseconds(50);  // the first is in: only what is there already
    if (left.count() <= 0) break;
    bool got = false;
    self->receive(
        [&](caf::down_msg& d) {
          got = true;
          auto it = process_of.find(d.source);
          if (it == process_of.end()) return;
          const auto& r = it->second;
          const std::string name = rank_name(r.rank, ep);
          if (error.find(name + " became unreachable") != std::string::npos) return;  // said already
          lost += std::string(lost.empty() ? "" : "; ") + "the process of " + name + " went away (pid " + std::to_string(r.pid) +
                  " on " + r.host + ")";
        },
        caf::after(left) >> [] {});
    if (!got) break;
  }
  if (!lost.empty()) error = lost + ": " + error;
}

void stop_rank(caf::scoped_actor& self, const local_rank& lr) {
  self->send_exit(lr.spawned.driver, caf::exit_reason::user_shutdown);
  for (auto& a : lr.spawned.components) self->send_exit(a, caf::exit_reason::user_shutdown);
}

}  // namespace

expected<cluster_result> run_rank_zero(const experiment_bundle& bundle, const cluster_options& opt) {
  auto loaded = load_bundle(bundle);
  if (!loaded) return unexpected(loaded.error());
  cluster_result out;
  out.run = std::move(*loaded);
  const auto& e = out.run.experiment;
  const auto& s = out.run.schedule.sched;
  auto plan = exec::make_run_plan(e, s);
  if (!plan) return unexpected(plan.error());
  const auto t0 = std::chrono::steady_clock::now();
  out.result.lowered = plan->lowered;

  cluster_config cfg{opt.peer_timeout_seconds};
  caf::actor_system sys{cfg};
  auto reg = sys.spawn(registry, bundle, plan->world);
  auto port = caf::io::publish(reg, opt.port, opt.host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
    return unexpected(errc::transport_error, "cannot listen on " + opt.host + ":" + std::to_string(opt.port) + ": " + sys.render(port.error()));
  }
  if (opt.on_listening) opt.on_listening(*port);

  auto mine = build_rank(sys, *plan, 0);
  if (!mine) {  // the registry must go, or the actor system waits for it forever
    caf::anon_send_exit(reg, caf::exit_reason::user_shutdown);
    return unexpected(mine.error());
  }
  caf::scoped_actor self{sys};
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(opt.join_timeout_seconds));
  std::string failure;
  ready_reply all;
  self->request(reg, timeout, ready_atom::value, ready_of(0, *mine, self))
      .receive([&](ready_reply r) { all = std::move(r); },
               [&](caf::error& err) {
                 failure = "not every rank joined within " + std::to_string(static_cast<int>(opt.join_timeout_seconds)) +
                           " s (" + sys.render(err) + "): start " + std::to_string(plan->world - 1) + " workers with loom worker --rendezvous " +
                           opt.host + ":" + std::to_string(*port);
               });
  if (failure.empty()) {
    std::vector<std::vector<std::uint8_t>> addresses;
    for (const auto& r : all.ranks) addresses.push_back(from_bytes(r.address));
    if (auto ok = mine->handle.connect(addresses); !ok) failure = ok.error().message;
  }
  if (failure.empty())
    self->request(reg, timeout, connected_atom::value, std::int32_t{0})
        .receive([](bool) {}, [&](caf::error& err) { failure = "the ranks did not all connect: " + sys.render(err); });
  std::vector<caf::actor> listeners;
  if (failure.empty()) {
    std::vector<exec::spawned_rank> ranks;
    for (auto& r : all.ranks) {
      exec::spawned_rank sr;
      sr.driver = r.driver;
      sr.components = r.components;
      if (r.rank != 0 && !sr.components.empty()) {
        listeners.push_back(sr.components.back());
        sr.components.pop_back();
      } else if (!sr.components.empty()) {
        sr.components.pop_back();  // our own listener is this scoped actor
      }
      sr.logical_layers.assign(r.logical_layers.begin(), r.logical_layers.end());
      ranks.push_back(std::move(sr));
    }
    // Every worker process's listener, monitored: a process that goes away names its rank in the error.
    std::map<caf::actor_addr, ready_request> process_of;
    for (std::size_t i = 0; i < listeners.size(); ++i) {
      self->monitor(listeners[i]);
      ready_request who;
      for (const auto& r : all.ranks)
        if (!r.components.empty() && r.components.back() == listeners[i]) who = r;
      who.components.clear();
      process_of[listeners[i].address()] = std::move(who);
    }
    auto cs = exec::make_coordinator_setup(*plan, ranks, opt.on_step);
    cs.on_abort = [handle = mine->handle](const loom::error& why) { handle.abort(why); };
    auto coord = actors::spawn_coordinator(sys, std::move(cs));
    self->request(coord, caf::infinite, actors::run_atom::value)
        .receive([&](actors::run_outcome o) { out.result.outcome = std::move(o); },
                 [&](caf::error& err) {
                   out.result.outcome.ok = false;
                   out.result.outcome.error = "the coordinator failed: " + sys.render(err);
                 });
    if (!out.result.outcome.ok) name_lost_processes(self, process_of, out.run.experiment.ep, out.result.outcome.error);
    if (out.result.outcome.ok && opt.collect_tensors)
      for (auto& r : ranks)
        self->request(r.driver, std::chrono::seconds(60), actors::grads_atom::value)
            .receive(
                [&](actors::tensor_dump d) {
                  for (std::size_t i = 0; i < d.names.size(); ++i) {
                    out.result.grads.emplace(d.names[i], std::move(d.grads[i]));
                    out.result.values.emplace(d.names[i], std::move(d.values[i]));
                  }
                },
                [&](caf::error&) {});
    self->send_exit(coord, caf::exit_reason::user_shutdown);
  } else {
    out.result.outcome.ok = false;
    out.result.outcome.error = failure;
  }
  // The run is over, well or not: every worker stops.
  for (auto& l : listeners) self->send(l, finish_atom::value);
  stop_rank(self, *mine);
  close_data_plane(*mine);
  self->send_exit(reg, caf::exit_reason::user_shutdown);
  exec::summarize(*plan, out.result);
  out.result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!failure.empty()) return unexpected(errc::transport_error, failure);
  return out;
}

expected<void> run_worker(int rank, const cluster_options& opt) {
  cluster_config cfg{opt.peer_timeout_seconds};
  caf::actor_system sys{cfg};
  // Rank 0 may start later than we do (srun, mpirun): keep trying until the timeout.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(opt.join_timeout_seconds);
  caf::expected<registry_actor> reg = caf::sec::cannot_connect_to_node;
  while (true) {
    reg = sys.middleman().remote_actor<registry_actor>(opt.host, opt.port);
    if (reg || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!reg)
    return unexpected(errc::transport_error, "cannot reach rank 0 at " + opt.host + ":" + std::to_string(opt.port) + ": " +
                                                 sys.render(reg.error()));
  caf::scoped_actor self{sys};
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(opt.join_timeout_seconds));
  join_request jr{loom::version, protocol_version, rank, hostname(), static_cast<std::int64_t>(::getpid())};
  join_reply joined;
  std::string failure;
  self->request(*reg, timeout, join_atom::value, jr)
      .receive([&](join_reply r) { joined = std::move(r); }, [&](caf::error& err) { failure = "join failed: " + sys.render(err); });
  if (failure.empty() && !joined.ok) failure = joined.error;
  if (!failure.empty()) return unexpected(errc::transport_error, failure);

  auto loaded = load_bundle(joined.bundle);
  if (!loaded) return unexpected(loaded.error());
  auto plan = exec::make_run_plan(loaded->experiment, loaded->schedule.sched);
  if (!plan) return unexpected(plan.error());
  if (plan->world != joined.world)
    return unexpected(errc::invalid_experiment, "the experiment has " + std::to_string(plan->world) + " ranks, the run " +
                                                    std::to_string(joined.world));
  auto mine = build_rank(sys, *plan, joined.rank);
  if (!mine) return unexpected(mine.error());
  self->monitor(*reg);  // rank 0 gone: stop
  ready_reply all;
  self->request(*reg, timeout, ready_atom::value, ready_of(joined.rank, *mine, self))
      .receive([&](ready_reply r) { all = std::move(r); }, [&](caf::error& err) { failure = "rank 0 did not gather every rank: " + sys.render(err); });
  if (failure.empty()) {
    std::vector<std::vector<std::uint8_t>> addresses;
    for (const auto& r : all.ranks) addresses.push_back(from_bytes(r.address));
    if (auto ok = mine->handle.connect(addresses); !ok) failure = ok.error().message;
  }
  if (failure.empty())
    self->request(*reg, timeout, connected_atom::value, joined.rank)
        .receive([](bool) {}, [&](caf::error& err) { failure = "the ranks did not all connect: " + sys.render(err); });
  // Now the coordinator drives our rank; we wait to be told the run is over, or for rank 0 to vanish.
  bool done = !failure.empty();
  while (!done) {
    self->receive([&](finish_atom) { done = true; },
                  [&](caf::down_msg& d) {
                    failure = "rank 0 went away (" + sys.render(d.reason) + ")";
                    done = true;
                  });
  }
  mine->handle.abort(loom::error(errc::cancelled, failure.empty() ? "the run is over" : failure));
  stop_rank(self, *mine);
  close_data_plane(*mine);
  if (!failure.empty()) return unexpected(errc::transport_error, "rank " + std::to_string(joined.rank) + ": " + failure);
  return {};
}

}  // namespace loom::cluster
