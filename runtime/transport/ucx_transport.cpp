#include "runtime/transport/ucx_transport.hpp"

#include "actors/transport_collectives.hpp"

#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
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

// The UCX tag of a message: the sender's rank (15 bits), a flag set on the data part of a large
// payload (1 bit), and loom's 48-bit tag.
constexpr std::uint64_t tag_mask = (std::uint64_t{1} << actors::tag_bits) - 1;
constexpr std::uint64_t data_flag = std::uint64_t{1} << actors::tag_bits;
constexpr int rank_shift = actors::tag_bits + 1;
// Payloads up to this size travel as one message (a copy is cheap); larger ones as a header followed
// by the data, sent from and received into the payload's own vectors (no copy).
constexpr std::size_t inline_limit = 8192;

std::string ucs_text(ucs_status_t s) { return ucs_status_string(s); }

// Whether UCX_TLS names only shared-memory transports. UCX 1.13's shared-memory transports cannot
// report a failed peer, so endpoints to them are made without peer error handling (UCX refuses the
// connection otherwise); a lost peer is then noticed by the control plane, which monitors every rank.
bool shared_memory_only() {
  const char* tls = std::getenv("UCX_TLS");
  if (tls == nullptr || *tls == '\0' || *tls == '^') return false;
  static const char* const shared[] = {"sm", "shm", "posix", "sysv", "cma", "knem", "xpmem", "self"};
  std::string list = tls;
  for (std::size_t at = 0; at <= list.size();) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    const std::string name = list.substr(at, comma - at);
    if (std::none_of(std::begin(shared), std::end(shared), [&](const char* s) { return name == s; })) return false;
    at = comma + 1;
  }
  return true;
}

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
  std::vector<std::uint8_t> bytes;  // the inline message, or the header of a large one
  actors::payload data;             // a large payload, sent in place
  int parts = 0;                    // sends still in flight (header and data parts)
};
struct recv_request {
  ucx_state* owner;
  std::vector<std::uint8_t> bytes;  // an inline message or a header
  std::uint64_t tag;                // the UCX tag it came with
  actors::payload data;             // a large payload, received in place
  bool data_phase = false;          // receiving the data parts (UCX does not report their tag)
  int parts_left = 0;               // data parts still to arrive
  bool failed = false;              // a data part failed: the payload is dropped
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
    if (sleeping.load()) ucp_worker_signal(worker);  // a spinning progress thread sees the task anyway
  }
  std::atomic<bool> sleeping{false};  // the progress thread waits on the event descriptor
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

  // Sees every payload as it arrives, in each sender's order, before matching (ucx_on_arrival).
  std::function<void(int from, actors::payload&)> on_arrival;

  void deliver(int from, std::uint64_t tag, actors::payload p) {
    if (on_arrival) on_arrival(from, p);
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
    if (request) ucp_request_free(request);
    if (rr->data_phase) {  // one data part of a large payload has arrived in place
      if (status != UCS_OK) rr->failed = true;
      if (--rr->parts_left > 0) return;
      if (!rr->failed) rr->owner->deliver(static_cast<int>(rr->tag >> rank_shift), rr->tag & tag_mask, std::move(rr->data));
      delete rr;
      return;
    }
    if (status != UCS_OK) {
      delete rr;
      return;
    }
    const std::uint64_t wire = info->sender_tag;
    const int from = static_cast<int>(wire >> rank_shift);
    const std::uint64_t tag = wire & tag_mask;
    std::uint64_t n[3] = {0, 0, 0};
    if (rr->bytes.size() == sizeof n) std::memcpy(n, rr->bytes.data(), sizeof n);
    if (rr->bytes.size() == sizeof n && n[0] + n[1] + n[2] > 0) {
      rr->owner->receive_data(rr, n);  // a header: the data follows
      return;
    }
    auto p = deserialize(rr->bytes.data(), rr->bytes.size());
    if (p) rr->owner->deliver(from, tag, std::move(*p));
    delete rr;
  }

  // After a large payload's header: receive its data straight into the payload's vectors, one
  // contiguous message per non-empty vector (UCX moves contiguous buffers zero-copy, iovs not).
  // The parts share one tag; UCX matches messages from one sender in order.
  void receive_data(recv_request* rr, const std::uint64_t* n) {
    rr->data.f.resize(n[0]);
    rr->data.d.resize(n[1]);
    rr->data.i.resize(n[2]);
    std::pair<void*, std::size_t> parts[3];
    int count = 0;
    if (n[0]) parts[count++] = {rr->data.f.data(), n[0] * 4};
    if (n[1]) parts[count++] = {rr->data.d.data(), n[1] * 8};
    if (n[2]) parts[count++] = {rr->data.i.data(), n[2] * 4};
    rr->data_phase = true;
    rr->parts_left = count;
    const std::uint64_t data_tag = rr->tag | data_flag;
    for (int k = 0; k < count; ++k) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
      param.cb.recv = on_recv;
      param.user_data = rr;
      param.datatype = ucp_dt_make_contig(1);
      ucs_status_ptr_t st = ucp_tag_recv_nbx(worker, parts[k].first, parts[k].second, data_tag, ~std::uint64_t{0}, &param);
      if (st == nullptr) {
        ucp_tag_recv_info_t done{data_tag, parts[k].second};
        on_recv(nullptr, UCS_OK, &done, rr);
      } else if (UCS_PTR_IS_ERR(st)) {  // the parts not posted will not come either
        rr->parts_left -= count - k - 1;
        on_recv(nullptr, UCS_PTR_STATUS(st), nullptr, rr);
        return;
      }
    }
  }

  static void on_send(void* request, ucs_status_t, void* user) {
    auto* sr = static_cast<send_request*>(user);
    if (--sr->parts == 0) delete sr;
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
  // Takes every inline message and header that has arrived, whatever its tag (data parts are
  // received by the receive their header posts).
  void drain() {
    ucp_tag_recv_info_t info;
    for (;;) {
      ucp_tag_message_h msg = ucp_tag_probe_nb(worker, 0, data_flag, 1, &info);
      if (!msg) return;
      auto* rr = new recv_request{this, std::vector<std::uint8_t>(info.length), info.sender_tag, {}};
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
      sleeping.store(true);  // before looking at the tasks: a later post() will signal
      bool pending;
      {
        std::lock_guard<std::mutex> lock(task_mutex);
        pending = !tasks.empty();  // posted after we looked: do it instead of sleeping
      }
      if (!pending) {
        pollfd p{event_fd, POLLIN, 0};
        ::poll(&p, 1, 10);
      }
      sleeping.store(false);
      idle = 0;
    }
  }

  void shutdown() {
    if (running.exchange(false)) {
      if (worker) ucp_worker_signal(worker);
      if (progress.joinable()) progress.join();
    }
    if (!worker) return;
    // Sends already handed to us still go out: issue the queued ones, then close every endpoint in
    // flush mode (its sends complete first), giving a peer that does not answer two seconds.
    run_tasks();
    std::vector<ucs_status_ptr_t> closing;
    for (auto& ep : endpoints) {
      if (!ep) continue;
      ucp_request_param_t param{};
      ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &param);
      ep = nullptr;  // so an error callback during the close leaves it alone
      if (req && UCS_PTR_IS_PTR(req)) closing.push_back(req);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto pending = [&] {
      for (auto req : closing)
        if (ucp_request_check_status(req) == UCS_INPROGRESS) return true;
      return false;
    };
    while (pending() && std::chrono::steady_clock::now() < deadline) ucp_worker_progress(worker);
    for (auto req : closing) ucp_request_free(req);
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
  if (data.device || data.wire)
    return unexpected(errc::transport_error,
                      "the ucx transport moves host memory: GPU rows must be staged to the host first (gpu_leave_process)");
  if (peer == self) {  // to ourselves: no network
    s.deliver(self, tag & tag_mask, std::move(data));
    return {};
  }
  auto* sr = new send_request{};
  if (data.bytes() <= inline_limit) {
    sr->bytes = serialize(data);
  } else {
    const std::uint64_t n[3] = {data.f.size(), data.d.size(), data.i.size()};
    sr->bytes.resize(sizeof n);
    std::memcpy(sr->bytes.data(), n, sizeof n);
    sr->data = std::move(data);
  }
  const std::uint64_t wire_tag = (static_cast<std::uint64_t>(self) << rank_shift) | (tag & tag_mask);
  s.post([&s, sr, peer, wire_tag] {
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      if (s.lost[peer] || !s.endpoints[peer]) {  // the peer failed meanwhile: its receivers hear of it
        delete sr;
        return;
      }
    }
    auto issue = [&](void* buffer, std::size_t count, ucp_datatype_t type, std::uint64_t t) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
      param.cb.send = ucx_state::on_send;
      param.user_data = sr;
      param.datatype = type;
      ++sr->parts;
      ucs_status_ptr_t st = ucp_tag_send_nbx(s.endpoints[peer], buffer, count, t, &param);
      if (st == nullptr || UCS_PTR_IS_ERR(st)) --sr->parts;  // done at once (no callback), or failed (the peer is lost)
    };
    ++sr->parts;  // held while both parts are issued
    issue(sr->bytes.data(), sr->bytes.size(), ucp_dt_make_contig(1), wire_tag);
    if (sr->data.bytes() > 0) {  // the data parts, in the order the receiver posts them
      const auto contig = ucp_dt_make_contig(1);
      if (!sr->data.f.empty()) issue(sr->data.f.data(), sr->data.f.size() * 4, contig, wire_tag | data_flag);
      if (!sr->data.d.empty()) issue(sr->data.d.data(), sr->data.d.size() * 8, contig, wire_tag | data_flag);
      if (!sr->data.i.empty()) issue(sr->data.i.data(), sr->data.i.size() * 4, contig, wire_tag | data_flag);
    }
    if (--sr->parts == 0) delete sr;
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

std::vector<std::uint8_t> address_of(void* state) {
  auto& s = *static_cast<ucx_state*>(state);
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

expected<void> connect_to(void* state, const std::vector<std::vector<std::uint8_t>>& addresses) {
  auto& s = *static_cast<ucx_state*>(state);
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
      ep.err_mode = shared_memory_only() ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
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

void ucx_all_to_all(void* p, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<actors::payload> out,
                    actors::all_to_all_callback done);
void ucx_barrier(void* p, int self, const std::vector<int>& group, std::uint64_t tag, actors::barrier_callback done);

const actors::transport_ops ucx_ops = {"ucx",          address_of,  connect_to, ucx_send, ucx_receive,
                                       ucx_all_to_all, ucx_barrier, ucx_abort,
                                       /*carries_device_memory=*/false};

void ucx_all_to_all(void* p, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<actors::payload> out,
                    actors::all_to_all_callback done) {
  actors::all_to_all_by_messages(ucx_ops, p, self, group, tag, std::move(out), std::move(done));
}
void ucx_barrier(void* p, int self, const std::vector<int>& group, std::uint64_t tag, actors::barrier_callback done) {
  actors::barrier_by_messages(ucx_ops, p, self, group, tag, std::move(done));
}

}  // namespace

expected<std::shared_ptr<void>> make_ucx_transport(int rank, int world) {
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

std::vector<std::uint8_t> ucx_address(const std::shared_ptr<void>& state) { return address_of(state.get()); }

expected<void> ucx_connect(const std::shared_ptr<void>& state, const std::vector<std::vector<std::uint8_t>>& addresses) {
  return connect_to(state.get(), addresses);
}

actors::transport ucx_handle(const std::shared_ptr<void>& state) {
  auto& s = *static_cast<ucx_state*>(state.get());
  return actors::transport(&ucx_ops, state, s.rank, s.world);
}

void ucx_close(const std::shared_ptr<void>& state) { static_cast<ucx_state*>(state.get())->shutdown(); }

void ucx_on_arrival(const std::shared_ptr<void>& state, std::function<void(int from, actors::payload&)> hook) {
  static_cast<ucx_state*>(state.get())->on_arrival = std::move(hook);
}

}  // namespace loom::transport
