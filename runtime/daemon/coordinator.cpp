#include "runtime/daemon/coordinator.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "loom/version.hpp"
#include "runtime/daemon/bundle_check.hpp"
#include "runtime/daemon/clock.hpp"
#include "runtime/daemon/token.hpp"

namespace loom::daemon {

namespace {

namespace fs = std::filesystem;

using validate_atom = caf::atom_constant<caf::atom("validate")>;

constexpr std::size_t max_result_file = 8u << 20;

struct coordinator_state {
  std::shared_ptr<store> db;
  std::unique_ptr<job_queue> queue;
  std::shared_ptr<host_table> hosts;
  daemon_settings cfg;
  bool stopping = false;
  bool tick_armed = false;
};

using self_ptr = coordinator_actor::stateful_pointer<coordinator_state>;

void arm_tick(self_ptr self);

const std::string refused_token =
    "refused: the token does not match this daemon's (use the token file from the daemon's state folder: "
    "--token-file STATE/token or LOOM_TOKEN_FILE)";

// Up to `max` bytes of a file from `offset`; `next` is where the read stopped.
std::string read_range(const std::string& path, std::uint64_t offset, std::size_t max, std::uint64_t& next) {
  next = offset;
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::uint64_t>(static_cast<std::streamoff>(in.tellg()));
  if (offset >= size) {
    next = size < offset ? size : offset;
    return {};
  }
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(size - offset, max));
  std::string text(n, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(text.data(), static_cast<std::streamsize>(n));
  text.resize(static_cast<std::size_t>(in.gcount()));
  next = offset + text.size();
  return text;
}

std::string read_whole(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec || size > max_result_file) return {};
  std::uint64_t next = 0;
  return read_range(path, 0, max_result_file, next);
}

// A worker per submission: validation may take long on a big schedule; the coordinator stays free.
// (The submission is a spawn argument, not copied into a message; and CAF 0.17 dereferences a null
// pointer when it spawns a function actor without arguments.)
caf::behavior validator(caf::event_based_actor* self, std::shared_ptr<const submission> s) {
  return {[self, s](validate_atom) -> caf::message {
    self->quit();
    try {  // nothing below throws by design; an exception (out of memory) still becomes a refusal
      auto v = validate_submission(*s);
      if (!v) return caf::make_message(false, v.error().message, std::string());
      return caf::make_message(true, v->experiment.name, v->summary);
    } catch (const std::exception& e) {
      return caf::make_message(false, std::string("the daemon could not check the submission: ") + e.what(), std::string());
    }
  }};
}

caf::typed_response_promise<submit_reply> submit(self_ptr self, submission s) {
  auto rp = self->make_response_promise<submit_reply>();
  auto sub = std::make_shared<submission>(std::move(s));
  auto worker = self->spawn(validator, std::shared_ptr<const submission>(sub));
  self->request(worker, caf::infinite, validate_atom::value)
      .then(
          [self, rp, sub](bool ok, std::string& name_or_error, std::string& summary) mutable {
            submit_reply r;
            if (!ok) {
              r.error = name_or_error;
              rp.deliver(r);
              return;
            }
            if (self->state.stopping) {
              r.error = "refused: the daemon is shutting down";
              rp.deliver(r);
              return;
            }
            new_experiment e{name_or_error, std::move(*sub), unix_now()};
            auto id = self->state.db->insert(e);
            if (!id) {
              r.error = "the daemon could not record the experiment: " + id.error().message;
              rp.deliver(r);
              return;
            }
            r.ok = true;
            r.id = *id;
            r.summary = summary;
            rp.deliver(r);
            self->state.queue->fill();
            arm_tick(self);
          },
          [rp](caf::error& err) mutable {
            submit_reply r;
            r.error = "the daemon could not validate the submission (" + caf::to_string(err) + ")";
            rp.deliver(r);
          });
  return rp;
}

status_reply status(self_ptr self, std::int64_t id) {
  status_reply r;
  auto items = self->state.db->list(id == 0 ? std::nullopt : std::optional<std::int64_t>(id));
  if (!items) {
    r.error = items.error().message;
    return r;
  }
  if (id != 0 && items->empty()) {
    r.error = "no experiment " + std::to_string(id);
    return r;
  }
  r.ok = true;
  r.items = std::move(*items);
  return r;
}

logs_reply logs(self_ptr self, std::int64_t id, std::uint64_t offset) {
  logs_reply r;
  auto row = self->state.db->get(id);
  if (!row) {
    r.error = row.error().message;
    return r;
  }
  if (!*row) {
    r.error = "no experiment " + std::to_string(id);
    return r;
  }
  r.ok = true;
  r.status = (*row)->status;  // read before the log: a final status means the log is complete
  r.text = read_range(self->state.cfg.queue.paths.experiment_dir(id) + "/log", offset, max_logs_chunk, r.next);
  return r;
}

results_reply results(self_ptr self, std::int64_t id) {
  results_reply r;
  auto row = self->state.db->get(id);
  if (!row) {
    r.error = row.error().message;
    return r;
  }
  if (!*row) {
    r.error = "no experiment " + std::to_string(id);
    return r;
  }
  r.ok = true;
  r.info = **row;
  if (!r.info.result_dir.empty()) {
    r.report_json = read_whole(r.info.result_dir + "/report.json");
    r.timeline_svg = read_whole(r.info.result_dir + "/timeline.svg");
    std::error_code ec;
    for (const auto& ent : fs::directory_iterator(r.info.result_dir, ec))
      if (ent.is_regular_file(ec)) r.files.push_back(ent.path().filename().string());
    std::sort(r.files.begin(), r.files.end());
  }
  return r;
}

void note(const std::string& line) { std::cerr << "loomd: " << line << std::endl; }

// Multi-process runs wait for rank 0's port and for stopped ranks to go: poll while they do.
void arm_tick(self_ptr self) {
  auto& st = self->state;
  if (st.tick_armed || st.stopping || !st.queue->needs_tick()) return;
  st.tick_armed = true;
  self->delayed_send(self, std::chrono::milliseconds(100), tick_atom::value, st.cfg.internal_key);
}

host_info self_info(self_ptr self) {
  const auto& q = self->state.cfg.queue;
  host_info h;
  h.name = q.host_name;
  h.address = q.advertise;
  h.version = loom::version;
  h.slots = q.slots;
  h.used = self->state.queue->local_slots_used();
  return h;
}

host_join_reply join(self_ptr self, host_join_request& req) {
  host_join_reply r;
  if (req.host.version != loom::version) {
    r.error = "refused: this daemon runs loom " + std::string(loom::version) + ", the joining one " + req.host.version +
              " (every host of a run must run the same build)";
    return r;
  }
  if (!req.agent) {
    r.error = "refused: the join carries no agent";
    return r;
  }
  if (req.host.slots <= 0) {
    r.error = "refused: a host must offer at least one slot";
    return r;
  }
  req.host.joined_at = unix_now();
  self->monitor(req.agent);  // gone (process, host or link): dropped from the list
  note("host " + req.host.name + " (" + req.host.address + ", " + std::to_string(req.host.slots) + " slots) joined");
  self->state.hosts->add(req.host, req.agent);
  r.ok = true;
  r.head = self->state.cfg.queue.host_name;
  return r;
}

remote_hosts remote_of(self_ptr self, std::shared_ptr<host_table> table) {
  remote_hosts rh;
  rh.table = table;
  rh.start = [self](std::uint64_t id, const workers_request& req) {
    auto* h = self->state.hosts->find(id);
    if (!h) return;
    const std::string name = h->info.name;
    self->request(h->agent, std::chrono::seconds(30), spawn_workers_atom::value, self->state.cfg.token, req)
        .then(
            [self, name, key = req.key](workers_reply& r) {
              if (!r.ok) self->state.queue->remote_failed(key, "host " + name + " could not start its ranks: " + r.error);
              arm_tick(self);
            },
            [self, name, key = req.key](caf::error& e) {
              self->state.queue->remote_failed(key, "host " + name + " did not start its ranks: " + self->system().render(e));
              arm_tick(self);
            });
  };
  rh.stop = [self](std::uint64_t id, const std::string& key) {
    if (auto* h = self->state.hosts->find(id)) self->send(h->agent, stop_workers_atom::value, self->state.cfg.token, key);
  };
  return rh;
}

coordinator_actor::behavior_type coordinator(self_ptr self, daemon_settings cfg, std::shared_ptr<store> db) {
  self->state.db = db;
  self->state.hosts = std::make_shared<host_table>();
  self->state.queue = std::make_unique<job_queue>(db, cfg.queue, remote_of(self, self->state.hosts));
  self->state.cfg = std::move(cfg);
  // Messages other than the interface's (a stray exit or error from a peer) are dropped, not obeyed;
  // the daemon ends only by its own stop message.
  self->set_default_handler(caf::drop);
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_down_handler([self](caf::down_msg& dm) {
    auto name = self->state.hosts->remove(dm.source);
    if (!name.empty()) note("host " + name + " left (" + self->system().render(dm.reason) + ")");
  });
  self->set_error_handler([](caf::error&) {});
  const auto key = self->state.cfg.internal_key;
  self->send(self, reap_atom::value, key);  // starts what was queued before a restart
  auto allowed = [self](const std::string& token) { return tokens_equal(self->state.cfg.token, token); };
  return {
      [self, allowed](submit_atom, const std::string& token, submission& s) -> caf::typed_response_promise<submit_reply> {
        if (!allowed(token)) {
          auto rp = self->make_response_promise<submit_reply>();
          submit_reply r;
          r.error = refused_token;
          rp.deliver(r);
          return rp;
        }
        return submit(self, std::move(s));
      },
      [self, allowed](status_atom, const std::string& token, std::int64_t id) -> status_reply {
        if (!allowed(token)) return {false, refused_token, {}};
        return status(self, id);
      },
      [self, allowed](logs_atom, const std::string& token, std::int64_t id, std::uint64_t offset) -> logs_reply {
        if (!allowed(token)) return {false, refused_token, {}, 0, {}};
        return logs(self, id, offset);
      },
      [self, allowed](cancel_atom, const std::string& token, std::int64_t id) -> basic_reply {
        if (!allowed(token)) return {false, refused_token, {}};
        const bool was_running = self->state.queue->is_running(id);
        auto done = self->state.queue->cancel(id);
        if (!done) return {false, done.error().message, {}};
        if (was_running)
          self->delayed_send(self, self->state.cfg.queue.cancel_grace, escalate_atom::value, self->state.cfg.internal_key, id);
        arm_tick(self);
        return {true, {}, *done};
      },
      [self, allowed](results_atom, const std::string& token, std::int64_t id) -> results_reply {
        if (!allowed(token)) {
          results_reply r;
          r.error = refused_token;
          return r;
        }
        return results(self, id);
      },
      [self, allowed](hosts_atom, const std::string& token) -> hosts_reply {
        hosts_reply r;
        if (!allowed(token)) {
          r.error = refused_token;
          return r;
        }
        r.ok = true;
        r.head = self_info(self);
        for (const auto& h : self->state.hosts->hosts()) r.hosts.push_back(h.info);
        return r;
      },
      [self, allowed](host_join_atom, const std::string& token, host_join_request& req) -> host_join_reply {
        if (!allowed(token)) return {false, refused_token, {}};
        return join(self, req);
      },
      [self, allowed](worker_exit_atom, const std::string& token, const worker_exit& w) {
        if (!allowed(token)) return;
        self->state.queue->worker_exited(w);
      },
      [self](reap_atom, std::uint64_t key) {
        if (key != self->state.cfg.internal_key || self->state.stopping) return;
        self->state.queue->poll();
        arm_tick(self);
      },
      [self](tick_atom, std::uint64_t key) {
        if (key != self->state.cfg.internal_key) return;
        self->state.tick_armed = false;
        if (self->state.stopping) return;
        self->state.queue->tick();
        arm_tick(self);
      },
      [self](escalate_atom, std::uint64_t key, std::int64_t id) {
        if (key != self->state.cfg.internal_key || self->state.stopping) return;
        self->state.queue->escalate(id);
      },
      [self](stop_atom, std::uint64_t key, const std::string& reason) -> bool {
        if (key != self->state.cfg.internal_key) return false;
        self->state.stopping = true;
        self->state.queue->stop(reason);
        self->quit();
        return true;
      }};
}

}  // namespace

coordinator_actor spawn_coordinator(caf::actor_system& sys, daemon_settings settings, std::shared_ptr<store> db) {
  return sys.spawn(coordinator, std::move(settings), std::move(db));
}

}  // namespace loom::daemon
