#include "runtime/daemon/coordinator.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

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
  daemon_settings cfg;
  bool stopping = false;
};

using self_ptr = coordinator_actor::stateful_pointer<coordinator_state>;

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

coordinator_actor::behavior_type coordinator(self_ptr self, daemon_settings cfg, std::shared_ptr<store> db) {
  self->state.db = db;
  self->state.queue = std::make_unique<job_queue>(db, cfg.queue);
  self->state.cfg = std::move(cfg);
  // Messages other than the interface's (a stray exit or error from a peer) are dropped, not obeyed;
  // the daemon ends only by its own stop message.
  self->set_default_handler(caf::drop);
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_down_handler([](caf::down_msg&) {});
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
      [self](reap_atom, std::uint64_t key) {
        if (key != self->state.cfg.internal_key || self->state.stopping) return;
        self->state.queue->poll();
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
