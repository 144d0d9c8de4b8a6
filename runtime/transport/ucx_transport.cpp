#include "runtime/transport/ucx_transport.hpp"

#include <poll.h>
#include <stdlib.h>
#include <ucp/api/ucp.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

namespace loom::transport {

namespace {

constexpr std::uint64_t tag_mask = (std::uint64_t{1} << actors::tag_bits) - 1;

std::string ucs_text(ucs_status_t s) { return ucs_status_string(s); }

// A payload as one contiguous message: three counts, then floats, doubles and ints.
std::vector<std::uint8_t> serialize(const actors::payload& p) {
  const std::uint64_t n[3] = {p.f.size(), p.d.size(), p.i.size()};
  std::vector<std::uint8_t> out(sizeof n + p.f.size() * 4 + p.d.size() * 8 + p.i.size() * 4);
  std::uint8_t* at = out.data();
  std::memcpy(at, n, sizeof n);
  at += sizeof n;
  if (!p.f.empty()) std::memcpy(at, p.f.data(), p.f.size() * 4);
  at += p.f.size() * 4;
  if (!p.d.empty()) std::memcpy(at, p.d.data(), p.d.size() * 8);
  at += p.d.size() * 8;
  if (!p.i.empty()) std::memcpy(at, p.i.data(), p.i.size() * 4);
  return out;
}

expected<actors::payload> deserialize(const std::uint8_t* data, std::size_t size) {
  std::uint64_t n[3];
  if (size < sizeof n) return unexpected(errc::transport_error, "ucx transport: a message shorter than its header");
  std::memcpy(n, data, sizeof n);
  if (n[0] > size || n[1] > size || n[2] > size || sizeof n + n[0] * 4 + n[1] * 8 + n[2] * 4 != size)
    return unexpected(errc::transport_error, "ucx transport: a message whose sizes do not add up");
  actors::payload p;
  p.f.resize(n[0]);
  p.d.resize(n[1]);
  p.i.resize(n[2]);
  const std::uint8_t* at = data + sizeof n;
  if (n[0]) std::memcpy(p.f.data(), at, n[0] * 4);
  at += n[0] * 4;
  if (n[1]) std::memcpy(p.d.data(), at, n[1] * 8);
  at += n[1] * 8;
  if (n[2]) std::memcpy(p.i.data(), at, n[2] * 4);
  return p;
}

struct ucx_state;

// What a pending UCX operation keeps alive until its callback.
struct send_request {
  std::vector<std::uint8_t> bytes;
};
struct recv_request {
  ucx_state* owner;
  std::vector<std::uint8_t> bytes;
  std::uint64_t tag;
};

struct ucx_state {
  int rank = 0, world = 1;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::vector<ucp_ep_h> endpoints;
  std::thread progress;
  std::atomic<bool> running{false};
  int event_fd = -1;

  // Work for the progress thread, which alone touches the UCP worker and its endpoints (so a peer
  // failing never races a send on another thread).
  std::mutex task_mutex;
  std::vector<std::function<void()>> tasks;
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(task_mutex);
      tasks.push_back(std::move(task));
    }
    ucp_worker_signal(worker);  // wakes the progress thread if it sleeps
  }
  // Runs a task on the progress thread and waits for it.
  void run(std::function<void()> task) {
    std::promise<void> done;
    auto f = done.get_future();
    post([&] {
      task();
      done.set_value();
    });
    f.wait();
  }
  bool run_tasks() {
    std::vector<std::function<void()>> now;
    {
      std::lock_guard<std::mutex> lock(task_mutex);
      now.swap(tasks);
    }
    for (auto& t : now) t();
    return !now.empty();
  }

  // The matching table: payloads that arrived before their receive, receives before their payload.
  std::mutex mutex;
  using key = std::tuple<int, std::uint64_t>;  // (from, tag)
  std::map<key, std::deque<actors::payload>> arrived;
  std::map<key, std::deque<actors::receive_callback>> waiting;
  std::vector<bool> lost;  // peers whose endpoint failed
  bool aborted = false;
  loom::error why;

  ~ucx_state() { shutdown(); }

  void deliver(int from, std::uint64_t tag, actors::payload p) {
    actors::receive_callback cb;
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = waiting.find({from, tag});
      if (it == waiting.end() || it->second.empty()) {
        arrived[{from, tag}].push_back(std::move(p));
        return;
      }
      cb = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) waiting.erase(it);
    }
    cb(std::move(p));
  }

  // Fails the receives waiting on `peer` (or on everyone, with peer < 0).
  void fail_waiting(int peer, const loom::error& e) {
    std::vector<actors::receive_callback> failed;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto it = waiting.begin(); it != waiting.end();) {
        if (peer < 0 || std::get<0>(it->first) == peer) {
          for (auto& cb : it->second) failed.push_back(std::move(cb));
          it = waiting.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& cb : failed) cb(unexpected(e));
  }

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user) {
    auto* rr = static_cast<recv_request*>(user);
    if (status == UCS_OK) {
      const int from = static_cast<int>(info->sender_tag >> actors::tag_bits);
      auto p = deserialize(rr->bytes.data(), rr->bytes.size());
      if (p) rr->owner->deliver(from, info->sender_tag & tag_mask, std::move(*p));
    }
    delete rr;
    if (request) ucp_request_free(request);
  }

  static void on_send(void* request, ucs_status_t, void* user) {
    delete static_cast<send_request*>(user);
    if (request) ucp_request_free(request);
  }

  static void on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* pair = static_cast<std::pair<ucx_state*, int>*>(arg);
    ucx_state& s = *pair->first;
    const int peer = pair->second;
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      if (peer >= 0 && peer < static_cast<int>(s.lost.size())) s.lost[peer] = true;
    }
    // The endpoint is dead: close it (we are on the progress thread, inside progress).
    if (peer >= 0 && peer < static_cast<int>(s.endpoints.size()) && s.endpoints[peer]) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t req = ucp_ep_close_nbx(s.endpoints[peer], &param);
      if (req && UCS_PTR_IS_PTR(req)) ucp_request_free(req);
      s.endpoints[peer] = nullptr;
    }
    s.fail_waiting(peer, loom::error(errc::transport_error, "rank " + std::to_string(peer) + " is unreachable (" + ucs_text(status) + ")"));
  }

  // Takes every message that has arrived, whatever its tag, into the matching table.
  void drain() {
    ucp_tag_recv_info_t info;
    for (;;) {
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker, 0, 0, 1, &info);
      if (!msg) return;
      auto* rr = new recv_request{this, std::vector<std::uint8_t>(info.length), info.sender_tag};
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
      param.cb.recv = on_recv;
      param.user_data = rr;
      param.datatype = ucp_dt_make_contig(1);
      ucs_status_ptr_t st = ucp_tag_msg_recv_nbx(worker, rr->bytes.data(), rr->bytes.size(), msg, &param);
      if (st == nullptr) {  // completed at once: the callback is not called
        ucp_tag_recv_info_t done{info.sender_tag, info.length};
        on_recv(nullptr, UCS_OK, &done, rr);
      } else if (UCS_PTR_IS_ERR(st)) {
        delete rr;
      }
    }
  }

  // Progress: spin while there is traffic, then sleep on the worker's event descriptor.
  void loop() {
    int idle = 0;
    while (running.load(std::memory_order_relaxed)) {
      bool worked = run_tasks();
      unsigned n = ucp_worker_progress(worker);
      drain();
      if (n > 0 || worked) {
        idle = 0;
        continue;
      }
      if (++idle < 2000) continue;  // a few tens of microseconds of spinning keep latency low
      ucs_status_t armed = ucp_worker_arm(worker);
      if (armed == UCS_ERR_BUSY) continue;
      {
        std::lock_guard<std::mutex> lock(task_mutex);
        if (!tasks.empty()) continue;  // posted after we looked: do it instead of sleeping
      }
      pollfd p{event_fd, POLLIN, 0};
      ::poll(&p, 1, 10);
      idle = 0;
    }
  }

  void shutdown() {
    if (running.exchange(false)) {
      if (worker) ucp_worker_signal(worker);
      if (progress.joinable()) progress.join();
    }
    for (auto& ep : endpoints)
      if (ep) {
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_EP_CLOSE_FLAG_FORCE;
        ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &param);
        if (req && UCS_PTR_IS_PTR(req)) {
          while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker);
          ucp_request_free(req);
        }
        ep = nullptr;
      }
    for (auto* arg : error_args) delete arg;
    error_args.clear();
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
    worker = nullptr;
    context = nullptr;
  }

  std::vector<std::pair<ucx_state*, int>*> error_args;
};

expected<void> ucx_send(void* p, int self, int peer, std::uint64_t tag, actors::payload data) {
  auto& s = *static_cast<ucx_state*>(p);
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.aborted) return unexpected(s.why);
    if (peer < 0 || peer >= s.world) return unexpected(errc::transport_error, "ucx transport: no rank " + std::to_string(peer));
    if (s.lost[peer]) return unexpected(errc::transport_error, "rank " + std::to_string(peer) + " is unreachable");
  }
  if (peer == self) {  // to ourselves: no network
    s.deliver(self, tag & tag_mask, std::move(data));
    return {};
  }
  auto* sr = new send_request{serialize(data)};
  const std::uint64_t wire_tag = (static_cast<std::uint64_t>(self) << actors::tag_bits) | (tag & tag_mask);
  s.post([&s, sr, peer, wire_tag] {
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      if (s.lost[peer] || !s.endpoints[peer]) {  // the peer failed meanwhile: its receivers hear of it
        delete sr;
        return;
      }
    }
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
    param.cb.send = ucx_state::on_send;
    param.user_data = sr;
    param.datatype = ucp_dt_make_contig(1);
    ucs_status_ptr_t st = ucp_tag_send_nbx(s.endpoints[peer], sr->bytes.data(), sr->bytes.size(), wire_tag, &param);
    if (st == nullptr || UCS_PTR_IS_ERR(st)) delete sr;  // done at once (no callback), or failed (the peer is lost)
  });
  return {};
}

void ucx_receive(void* p, int, int peer, std::uint64_t tag, actors::receive_callback done) {
  auto& s = *static_cast<ucx_state*>(p);
  expected<actors::payload> result{actors::payload{}};
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto key = ucx_state::key{peer, tag & tag_mask};
    auto it = s.arrived.find(key);
    if (it != s.arrived.end() && !it->second.empty()) {
      result = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) s.arrived.erase(it);
    } else if (s.aborted) {
      result = unexpected(s.why);
    } else if (peer >= 0 && peer < s.world && s.lost[peer]) {
      result = unexpected(errc::transport_error, "rank " + std::to_string(peer) + " is unreachable");
    } else {
      s.waiting[key].push_back(std::move(done));
      return;
    }
  }
  done(std::move(result));
}

void ucx_abort(void* p, const loom::error& why) {
  auto& s = *static_cast<ucx_state*>(p);
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.aborted = true;
    s.why = why;
  }
  s.fail_waiting(-1, why);
}

const actors::transport_ops ucx_ops = {"ucx", ucx_send, ucx_receive, ucx_abort};

}  // namespace

expected<std::shared_ptr<void>> make_ucx_transport(int rank, int world) {
  // UCX warns on stderr about things a failed peer leaves behind; loom reports failures itself.
  ::setenv("UCX_LOG_LEVEL", "error", 0);
  auto s = std::make_shared<ucx_state>();
  s->rank = rank;
  s->world = world;
  s->lost.assign(world, false);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  ucp_config_t* config = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: reading the configuration failed: " + ucs_text(st));
  ucs_status_t st = ucp_init(&params, config, &s->context);
  ucp_config_release(config);
  if (st != UCS_OK) return unexpected(errc::transport_error, "ucx: ucp_init failed: " + ucs_text(st));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
  if (st = ucp_worker_create(s->context, &wp, &s->worker); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: ucp_worker_create failed: " + ucs_text(st));
  if (st = ucp_worker_get_efd(s->worker, &s->event_fd); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: no event descriptor for the worker: " + ucs_text(st));
  s->endpoints.assign(world, nullptr);
  s->running = true;
  s->progress = std::thread([p = s.get()] { p->loop(); });
  return std::shared_ptr<void>(s);
}

std::vector<std::uint8_t> ucx_address(const std::shared_ptr<void>& state) {
  auto& s = *static_cast<ucx_state*>(state.get());
  std::vector<std::uint8_t> out;
  s.run([&] {
    ucp_address_t* address = nullptr;
    std::size_t length = 0;
    if (ucp_worker_get_address(s.worker, &address, &length) != UCS_OK) return;
    out.assign(reinterpret_cast<std::uint8_t*>(address), reinterpret_cast<std::uint8_t*>(address) + length);
    ucp_worker_release_address(s.worker, address);
  });
  return out;
}

expected<void> ucx_connect(const std::shared_ptr<void>& state, const std::vector<std::vector<std::uint8_t>>& addresses) {
  auto& s = *static_cast<ucx_state*>(state.get());
  if (static_cast<int>(addresses.size()) != s.world)
    return unexpected(errc::transport_error, "ucx: " + std::to_string(addresses.size()) + " addresses for " + std::to_string(s.world) + " ranks");
  expected<void> result;
  s.run([&] {
    for (int r = 0; r < s.world; ++r) {
      if (r == s.rank) continue;
      auto* arg = new std::pair<ucx_state*, int>(&s, r);
      s.error_args.push_back(arg);
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
      ep.address = reinterpret_cast<const ucp_address_t*>(addresses[r].data());
      ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
      ep.err_handler.cb = ucx_state::on_ep_error;
      ep.err_handler.arg = arg;
      if (ucs_status_t st = ucp_ep_create(s.worker, &ep, &s.endpoints[r]); st != UCS_OK) {
        result = unexpected(errc::transport_error, "ucx: connecting to rank " + std::to_string(r) + " failed: " + ucs_text(st));
        return;
      }
    }
  });
  return result;
}

actors::transport ucx_handle(const std::shared_ptr<void>& state) {
  auto& s = *static_cast<ucx_state*>(state.get());
  return actors::transport(&ucx_ops, state, s.rank, s.world);
}

void ucx_close(const std::shared_ptr<void>& state) { static_cast<ucx_state*>(state.get())->shutdown(); }

}  // namespace loom::transport
