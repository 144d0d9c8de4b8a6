#include "runtime/transport/ucx_transport.hpp"

#include <poll.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>

#include "actors/transport_collectives.hpp"
#include "runtime/transport/background_free.hpp"
#include "runtime/transport/receive_memory.hpp"
#include "runtime/transport/ucx_matching.hpp"
#include "runtime/transport/ucx_wire.hpp"
#include "runtime/transport/ucx_worker_lock.hpp"

namespace loom::transport {

namespace {

namespace wire = ucx_wire;

std::string ucs_text(ucs_status_t s) { return ucs_status_string(s); }
std::string unreachable(int peer) { return "rank " + std::to_string(peer) + " is unreachable"; }

// How long the progress thread keeps polling after the last message before it sleeps on the worker's
// event descriptor. Waking costs tens of microseconds (more on a loaded machine), so a burst of traffic
// should find it awake; but on a machine with few cores its polling takes a core from the actors.
constexpr auto spin_before_sleep = std::chrono::microseconds(200);
// How long idle polling goes on before each further round yields the core: where the peer's progress
// thread (or an actor) shares this core, it gets to run soon, not when our time slice ends. A time, not
// a count of rounds: an idle round over shared memory takes tens of nanoseconds, and a yield (a system
// call, a microsecond or more in a virtual machine) in every round of a 0.3 µs wait tripled the latency.
constexpr auto poll_before_yield = std::chrono::microseconds(4);
// With operations in flight it must not sleep long: UCX raises no event when a send that waits for
// room (a full shared-memory FIFO, a full socket) can go on. It polls, yielding the core to any other
// thread that wants it, and only after this long without progress (a peer that does not answer)
// sleeps in short naps.
constexpr auto patience_in_flight = std::chrono::milliseconds(20);
constexpr int nap_in_flight_ms = 1;
constexpr int sleep_idle_ms = 100;
// Receives of at least this size allocate their buffer with the worker unlocked (zero-filling and
// faulting in megabytes must not hold up a sender on another thread).
constexpr std::size_t unlock_to_allocate = std::size_t{256} << 10;

// Whether UCX_TLS names only shared-memory transports (which cannot report a failed peer).
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

// Whether endpoints ask UCX to handle a failed peer (UCP_ERR_HANDLING_MODE_PEER). By default they
// do not, because in UCX 1.13 it costs speed: endpoints with it get no zero-copy rendezvous over tcp
// (the sender streams each large payload as active messages that the receiver copies once more out of
// its socket buffer), and no shared-memory transport where UCX_TLS leaves the choice to UCX. loom
// does not need it: a connection that closes still reaches on_ep_error over tcp, and the control
// plane, which monitors every rank, fails the run naming a rank that dies or goes silent.
// LOOM_UCX_PEER_ERRORS=1 asks for it (UCX's keepalive then finds a silent peer too), except over
// shared memory alone, where UCX would refuse the connection.
ucp_err_handling_mode_t peer_error_mode() {
  const char* asked = std::getenv("LOOM_UCX_PEER_ERRORS");
  const bool peer = asked != nullptr && std::strcmp(asked, "1") == 0;
  return peer && !shared_memory_only() ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
}

// A message being received: a payload in one message, or a lead and its bodies. Kept per sender in
// the order the messages were probed, and handed on in that order once complete, so payloads reach
// the matching table (and the arrival hook) in each sender's order whatever order UCX completes them.
struct inbound {
  std::uint64_t tag = 0;
  actors::payload data;
  std::vector<std::uint8_t> bytes;  // a packed or lead message, until unpacked
  wire::header h{};
  int running = 0;          // UCX receives of it still in flight
  bool lead = false;        // a lead: bodies follow
  bool unpacked = false;    // lead: its header has been read (`bodies` is known)
  unsigned bodies = 0;      // lead: the vectors its header says follow as bodies
  unsigned bodies_seen = 0; // lead: the bodies probed so far
  std::string error;        // set: the payload is lost; its receive fails with this
  bool complete() const {
    if (running > 0) return false;
    return !error.empty() || !lead || (unpacked && bodies_seen == bodies);
  }
};

struct ucx_state;

// The state of one UCX operation in flight, kept in the request's own space (ucp_params_t::request_size),
// so a message costs no allocation of ours. Sends keep their data alive here until UCX is done with it.
struct op {
  ucx_state* owner = nullptr;
  void* request = nullptr;
  op* prev = nullptr;
  op* next = nullptr;
  bool receiving = false;
  // Receiving: the message it belongs to and whether this part is a packed or lead message.
  int from = -1;
  inbound* rec = nullptr;
  bool bytes_part = false;
  // Sending: the vector or the packed bytes being sent.
  actors::payload data;
  std::vector<std::uint8_t> bytes;
};
constexpr std::size_t op_space = sizeof(op) + alignof(op);
op* op_at(void* request) {
  auto at = (reinterpret_cast<std::uintptr_t>(request) + alignof(op) - 1) & ~(std::uintptr_t{alignof(op)} - 1);
  return std::launder(reinterpret_cast<op*>(at));
}

struct ucx_state {
  int rank = 0, world = 1;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int event_fd = -1;
  std::thread progress;
  std::atomic<bool> running{false};
  std::atomic<bool> sleeping{false};  // the progress thread waits on the event descriptor
  std::function<void(int from, actors::payload&)> on_arrival;
  ucx_matching table;

  // Under `lock`: everything that touches the worker, its endpoints and the messages being received.
  worker_lock lock;
  std::vector<ucp_ep_h> endpoints;
  std::vector<std::pair<ucx_state*, int>*> error_args;
  bool closed = false;
  bool kicked = false;                   // a send left work for progress since the last progress call
  std::vector<std::deque<inbound*>> inbox;  // [sender]: messages in the order probed
  std::vector<inbound*> spare_inbound;   // finished messages' records, reused (one allocation less a message)
  std::vector<inbound*> open_lead;       // [sender]: the lead whose bodies are arriving
  std::vector<int> ready_senders;        // senders whose first message may be complete
  std::vector<actors::payload> garbage;  // large sent data, for `freer` once unlocked
  background_free<actors::payload> freer;  // frees it off the progress thread (freeing megabytes is slow)
  std::vector<int> failed_peers;         // endpoints that failed, to report once unlocked
  std::vector<std::uint8_t> spare;       // a byte buffer kept for the next packed message
  op* ops = nullptr;                     // every operation in flight

  ~ucx_state() { shutdown(); }

  // ---- operations in flight

  op* adopt(void* request) {
    op* o = new (op_at(request)) op;
    o->owner = this;
    o->request = request;
    o->next = ops;
    if (ops) ops->prev = o;
    ops = o;
    return o;
  }
  void retire(op* o) {
    if (o->prev) o->prev->next = o->next;
    else ops = o->next;
    if (o->next) o->next->prev = o->prev;
    void* request = o->request;
    o->~op();
    ucp_request_free(request);
  }

  // ---- sending (under `lock`)

  static void on_send(void* request, ucs_status_t, void*) {
    op* o = op_at(request);
    ucx_state& s = *o->owner;
    if (o->data.bytes() >= unlock_to_allocate) s.garbage.push_back(std::move(o->data));
    s.retire(o);
  }

  // Sends one message; `keep` (a payload holding the vector sent) or `bytes` must live until UCX is
  // done with `buffer`, so they move into the operation unless it completed at once.
  ucs_status_t issue(ucp_ep_h ep, const void* buffer, std::size_t length, std::uint64_t tag, actors::payload* keep,
                     std::vector<std::uint8_t>* bytes) {
    static const std::uint8_t nothing = 0;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_DATATYPE;
    param.cb.send = on_send;
    param.datatype = ucp_dt_make_contig(1);
    ucs_status_ptr_t st = ucp_tag_send_nbx(ep, length ? buffer : &nothing, length, tag, &param);
    if (st == nullptr) return UCS_OK;
    if (UCS_PTR_IS_ERR(st)) return UCS_PTR_STATUS(st);
    op* o = adopt(st);
    if (keep) o->data = std::move(*keep);  // a vector's storage moves with it: `buffer` stays valid
    if (bytes) o->bytes = std::move(*bytes);
    kicked = true;
    return UCS_INPROGRESS;
  }

  // ---- receiving (under `lock`, on the progress thread)

  static void on_recv(void* request, ucs_status_t status, const ucp_tag_recv_info_t*, void*) {
    op* o = op_at(request);
    ucx_state& s = *o->owner;
    s.finished(o->from, *o->rec, o->bytes_part, status);
    s.retire(o);
  }

  void finished(int from, inbound& rec, bool bytes_part, ucs_status_t status) {
    --rec.running;
    if (status != UCS_OK && rec.error.empty())
      rec.error = "ucx transport: receiving from rank " + std::to_string(from) + " failed: " + ucs_text(status);
    if (bytes_part && status == UCS_OK) {
      auto bodies = wire::unpack(rec.bytes.data(), rec.bytes.size(), rec.lead, rec.data, rec.h);
      if (!bodies) {
        if (rec.error.empty()) rec.error = bodies.error().message + " (from rank " + std::to_string(from) + ")";
      } else if (rec.lead) {
        rec.bodies = *bodies;
        rec.unpacked = true;
        if ((rec.bodies_seen & ~rec.bodies) && rec.error.empty())
          rec.error = "ucx transport: rank " + std::to_string(from) + " sent a body its lead did not announce";
      }
      if (spare.capacity() < rec.bytes.capacity() && rec.bytes.capacity() <= 4 * wire::inline_limit) {
        rec.bytes.clear();
        spare.swap(rec.bytes);
      }
    }
    if (rec.complete()) ready_senders.push_back(from);
  }

  // Posts the receive of a probed message into `buffer`.
  void post(ucp_tag_message_h msg, void* buffer, std::size_t length, int from, inbound& rec, bool bytes_part) {
    static std::uint8_t nothing = 0;
    ++rec.running;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_DATATYPE;
    param.cb.recv = on_recv;
    param.datatype = ucp_dt_make_contig(1);
    ucs_status_ptr_t st = ucp_tag_msg_recv_nbx(worker, length ? buffer : &nothing, length, msg, &param);
    if (st == nullptr) return finished(from, rec, bytes_part, UCS_OK);  // done at once: no callback
    if (UCS_PTR_IS_ERR(st)) return finished(from, rec, bytes_part, UCS_PTR_STATUS(st));
    op* o = adopt(st);
    o->receiving = true;
    o->from = from;
    o->rec = &rec;
    o->bytes_part = bytes_part;
  }

  // Receives a message nobody can use (so UCX lets go of it).
  void discard(ucp_tag_message_h msg, std::size_t length) {
    auto* rec = new inbound;  // not in any inbox: freed here once done
    rec->bytes.resize(length);
    post(msg, rec->bytes.data(), length, -1, *rec, false);  // sender -1: release() passes it by
    if (rec->running == 0) delete rec;
    else orphans.push_back(rec);
  }
  std::vector<inbound*> orphans;  // discarded messages still arriving

  // A vector of `n` elements to receive into: the one of `p` that `f` names.
  template <class V>
  void* sized(V& v, std::size_t n) {
    const std::size_t bytes = n * sizeof(typename V::value_type);
    if (bytes >= unlock_to_allocate) {
      lock.unlock();  // the probed message stays ours meanwhile
      v.reserve(n);
      if (bytes >= huge_receive) fault_in_huge(v.data(), bytes);
      v.resize(n);
      lock.lock_for_progress();
    } else {
      v.resize(n);
    }
    return v.data();
  }
  void* vector_for(actors::payload& p, wire::form f, std::size_t length) {
    switch (f) {
      case wire::form::floats: case wire::form::body_f: return sized(p.f, length / sizeof(float));
      case wire::form::doubles: case wire::form::body_d: return sized(p.d, length / sizeof(double));
      default: return sized(p.i, length / sizeof(std::int32_t));
    }
  }

  // Takes one probed message: its sender and form (from the UCX tag) say where it goes.
  void accept(ucp_tag_message_h msg, const ucp_tag_recv_info_t& info) {
    const int from = wire::sender_of(info.sender_tag);
    const wire::form f = wire::form_of(info.sender_tag);
    const std::uint64_t tag = wire::loom_tag_of(info.sender_tag);
    if (from < 0 || from >= world || from == rank) return discard(msg, info.length);
    const bool body = f == wire::form::body_f || f == wire::form::body_d || f == wire::form::body_i;
    if (body) {
      inbound* rec = open_lead[from];
      const unsigned bit = 1u << (static_cast<int>(f) - static_cast<int>(wire::form::body_f));
      if (!rec || rec->tag != tag || (rec->bodies_seen & bit) || info.length % wire::element_size(f)) {
        if (rec && rec->error.empty()) rec->error = "ucx transport: rank " + std::to_string(from) + " sent a malformed payload";
        return discard(msg, info.length);
      }
      rec->bodies_seen |= bit;
      if (rec->unpacked && !(rec->bodies & bit) && rec->error.empty())
        rec->error = "ucx transport: rank " + std::to_string(from) + " sent a body its lead did not announce";
      void* into = vector_for(rec->data, f, info.length);
      return post(msg, into, info.length, from, *rec, false);
    }
    open_lead[from] = nullptr;
    inbound& rec = *inbox[from].emplace_back(fresh_inbound());
    rec.tag = tag;
    if (f == wire::form::packed || f == wire::form::lead) {
      rec.lead = f == wire::form::lead;
      if (rec.lead) open_lead[from] = &rec;
      rec.bytes.swap(spare);
      rec.bytes.resize(info.length);
      return post(msg, rec.bytes.data(), info.length, from, rec, true);
    }
    if (info.length % wire::element_size(f) != 0) {
      rec.error = "ucx transport: rank " + std::to_string(from) + " sent a malformed payload";
      ++rec.running;  // finished() below takes it back
      discard(msg, info.length);
      return finished(from, rec, false, UCS_OK);
    }
    void* into = vector_for(rec.data, f, info.length);
    post(msg, into, info.length, from, rec, false);
  }

  // Takes every message that has arrived, whatever its tag: receives need not know sizes in advance.
  bool drain() {
    bool any = false;
    ucp_tag_recv_info_t info;
    while (ucp_tag_message_h msg = ucp_tag_probe_nb(worker, 0, 0, 1, &info)) {
      accept(msg, info);
      any = true;
    }
    for (std::size_t k = 0; k < orphans.size();) {
      if (orphans[k]->running == 0) {
        delete orphans[k];
        orphans[k] = orphans.back();
        orphans.pop_back();
      } else {
        ++k;
      }
    }
    return any;
  }

  inbound* fresh_inbound() {
    if (spare_inbound.empty()) return new inbound;
    inbound* r = spare_inbound.back();
    spare_inbound.pop_back();
    return r;
  }
  void recycle(inbound* r) {
    constexpr std::size_t keep = 256;
    if (spare_inbound.size() >= keep) return delete r;
    *r = inbound{};
    spare_inbound.push_back(r);
  }

  // Moves each sender's complete messages, in order, to `out`.
  void release(std::vector<delivery>& out) {
    for (int from : ready_senders) {
      if (from < 0) continue;
      auto& q = inbox[from];
      while (!q.empty() && q.front()->complete()) {
        inbound& r = *q.front();
        if (open_lead[from] == &r) open_lead[from] = nullptr;
        if (r.error.empty() && r.lead) {
          const std::size_t got[3] = {r.data.f.size(), r.data.d.size(), r.data.i.size()};
          for (int k = 0; k < 3; ++k)
            if ((r.bodies & (1u << k)) && got[k] != r.h.count[k])
              r.error = "ucx transport: rank " + std::to_string(from) + " sent a payload whose sizes do not add up";
        }
        if (r.error.empty()) out.push_back({from, r.tag, std::move(r.data)});
        else out.push_back({from, r.tag, unexpected(errc::transport_error, std::move(r.error))});
        q.pop_front();
        recycle(&r);
      }
    }
    ready_senders.clear();
  }

  static void on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* pair = static_cast<std::pair<ucx_state*, int>*>(arg);
    ucx_state& s = *pair->first;
    const int peer = pair->second;
    // Inside progress, under the lock: close the dead endpoint; its receivers hear of it once unlocked.
    if (peer >= 0 && peer < static_cast<int>(s.endpoints.size()) && s.endpoints[peer]) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t req = ucp_ep_close_nbx(s.endpoints[peer], &param);
      if (req && UCS_PTR_IS_PTR(req)) ucp_request_free(req);
      s.endpoints[peer] = nullptr;
      s.failed_peers.push_back(peer);
      s.failure_status = status;
    }
  }
  ucs_status_t failure_status = UCS_OK;

  // ---- the progress thread

  void hand_on(std::vector<delivery>& out) {
    if (on_arrival)
      for (auto& d : out)
        if (d.result) on_arrival(d.from, *d.result);
    table.deliver(out.data(), out.size());
    out.clear();
  }

  // One round: progress the worker, take new messages, hand complete ones on. Returns whether
  // anything happened. Takes the lock unless `holding` says the last round kept it; keeps it for the
  // next round when there is nothing to hand on and no sender waits (hand-ons run unlocked: a
  // receive callback may send).
  bool round(std::vector<delivery>& out, std::vector<actors::payload>& trash, std::vector<int>& failed, ucs_status_t& why,
             bool& in_flight, bool& holding) {
    if (!holding) lock.lock_for_progress();
    holding = true;
    const unsigned n = ucp_worker_progress(worker);
    kicked = false;
    const bool got = drain();
    release(out);
    trash.swap(garbage);
    failed.swap(failed_peers);
    why = failure_status;
    in_flight = ops != nullptr;
    const bool worked = n > 0 || got || !out.empty() || !trash.empty() || !failed.empty();
    if (out.empty() && trash.empty() && failed.empty() && !lock.wanted()) return worked;
    lock.unlock();
    holding = false;
    hand_on(out);
    freer.take(trash);
    for (int peer : failed)
      table.lose(peer, loom::error(errc::transport_error, unreachable(peer) + " (" + ucs_text(why) + ")"));
    failed.clear();
    return worked;
  }

  // Sleeps on the worker's event descriptor until a message or a sender's signal comes, or `ms` pass.
  // Called with the lock held; returns with it released.
  void sleep(int ms) {
    if (kicked) {  // a send since the last progress call may need it
      lock.unlock();
      return;
    }
    if (ucp_worker_arm(worker) != UCS_OK) {  // busy: events are pending
      lock.unlock();
      return;
    }
    sleeping.store(true);  // under the lock: a later send sees it and signals
    lock.unlock();
    pollfd p{event_fd, POLLIN, 0};
    ::poll(&p, 1, ms);
    sleeping.store(false);
  }

  void loop() {
    std::vector<delivery> out;
    std::vector<actors::payload> trash;
    std::vector<int> failed;
    ucs_status_t why = UCS_OK;
    bool in_flight = false;
    bool holding = false;
    unsigned idle = 0;
    bool yielding = false;
    auto idle_since = std::chrono::steady_clock::now();
    while (running.load(std::memory_order_relaxed)) {
      if (round(out, trash, failed, why, in_flight, holding)) {
        idle = 0;
        yielding = false;
        continue;
      }
      if (idle++ == 0) {
        idle_since = std::chrono::steady_clock::now();
        continue;
      }
      // Holding the lock while yielding: a sender that wants it says so, and gets it next round.
      if (idle % 16 != 0) {
        if (yielding) std::this_thread::yield();
        continue;
      }
      const auto quiet = std::chrono::steady_clock::now() - idle_since;
      yielding = quiet >= poll_before_yield;
      if (yielding) std::this_thread::yield();
      if (quiet < spin_before_sleep) continue;
      if (!in_flight || quiet >= patience_in_flight) {
        if (!holding) lock.lock_for_progress();
        holding = false;
        sleep(in_flight ? nap_in_flight_ms : sleep_idle_ms);
        if (!in_flight) idle = 0;
      }
    }
    if (holding) lock.unlock();
  }

  void shutdown() {
    if (running.exchange(false)) {
      ucp_worker_signal(worker);
      if (progress.joinable()) progress.join();
    }
    if (!worker) return;
    lock.lock_for_send();
    closed = true;
    // Sends already made still go out. First their requests complete (a rendezvous needs the peer to
    // fetch the data, which flushing an endpoint does not wait for), giving a peer that stops answering
    // two seconds; a lost peer completes them with an error. Then every endpoint closes in flush mode.
    auto sending = [&] {
      std::size_t n = 0;
      for (op* o = ops; o; o = o->next) n += !o->receiving;
      return n;
    };
    auto quiet_since = std::chrono::steady_clock::now();
    for (std::size_t left = sending(); left > 0;) {
      ucp_worker_progress(worker);
      const std::size_t now = sending();
      if (now < left) quiet_since = std::chrono::steady_clock::now();
      else if (std::chrono::steady_clock::now() - quiet_since > std::chrono::seconds(2)) break;
      left = now;
    }
    std::vector<ucs_status_ptr_t> closing;
    for (auto& ep : endpoints) {
      if (!ep) continue;
      ucp_request_param_t param{};
      ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &param);
      ep = nullptr;  // so an error callback during the close leaves it alone
      if (req && UCS_PTR_IS_PTR(req)) closing.push_back(req);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto closing_pending = [&] {
      for (auto req : closing)
        if (ucp_request_check_status(req) == UCS_INPROGRESS) return true;
      return false;
    };
    while (closing_pending() && std::chrono::steady_clock::now() < deadline) ucp_worker_progress(worker);
    for (auto req : closing) ucp_request_free(req);
    // Receives still in flight will not complete now.
    for (op* o = ops; o; o = o->next)
      if (o->receiving) ucp_request_cancel(worker, o->request);
    for (int k = 0; k < 100 && ops; ++k) ucp_worker_progress(worker);
    while (ops) retire(ops);
    for (auto* rec : orphans) delete rec;
    orphans.clear();
    for (auto& q : inbox)
      for (inbound* r : q) delete r;
    inbox.clear();
    for (inbound* r : spare_inbound) delete r;
    spare_inbound.clear();
    garbage.clear();
    ucp_worker_destroy(worker);
    ucp_cleanup(context);
    for (auto* arg : error_args) delete arg;
    error_args.clear();
    worker = nullptr;
    context = nullptr;
    lock.unlock();
  }
};

expected<void> ucx_send(void* p, int self, int peer, std::uint64_t tag, actors::payload data) {
  auto& s = *static_cast<ucx_state*>(p);
  if (auto refused = s.table.refuses_sends()) return unexpected(*refused);
  if (peer < 0 || peer >= s.world) return unexpected(errc::transport_error, "ucx transport: no rank " + std::to_string(peer));
  if (data.device || data.wire)
    return unexpected(errc::transport_error,
                      "the ucx transport moves host memory: GPU rows must be staged to the host first (gpu_leave_process)");
  tag &= wire::loom_tag_mask;
  if (peer == self) {  // to ourselves: no network
    if (s.on_arrival) s.on_arrival(self, data);
    delivery d{self, tag, std::move(data)};
    s.table.deliver(&d, 1);
    return {};
  }
  const wire::layout l = wire::layout_of(data);
  // Packed bytes are built before taking the lock, in a buffer each thread keeps for the next send.
  thread_local std::vector<std::uint8_t> packed;
  const bool packs = l.first == wire::form::packed || l.first == wire::form::lead;
  if (packs) wire::pack(data, l.bodies, packed);

  s.lock.lock_for_send();
  ucs_status_t st = UCS_OK;
  ucp_ep_h ep = s.closed ? nullptr : s.endpoints[peer];
  if (ep) {
    if (!packs) {
      const void* buffer = l.first == wire::form::floats ? static_cast<const void*>(data.f.data())
                           : l.first == wire::form::doubles ? static_cast<const void*>(data.d.data())
                                                            : static_cast<const void*>(data.i.data());
      st = s.issue(ep, buffer, data.bytes(), wire::wire_tag(self, l.first, tag), &data, nullptr);
    } else {
      const bool lead = l.first == wire::form::lead;
      st = s.issue(ep, packed.data(), packed.size(), wire::wire_tag(self, l.first, tag), nullptr, &packed);
      // The bodies, each sent from its own vector, in the order the receiver expects them.
      if (lead && !UCS_STATUS_IS_ERR(st) && (l.bodies & 1)) {
        actors::payload part;
        part.f = std::move(data.f);
        st = s.issue(ep, part.f.data(), part.f.size() * 4, wire::wire_tag(self, wire::form::body_f, tag), &part, nullptr);
      }
      if (lead && !UCS_STATUS_IS_ERR(st) && (l.bodies & 2)) {
        actors::payload part;
        part.d = std::move(data.d);
        st = s.issue(ep, part.d.data(), part.d.size() * 8, wire::wire_tag(self, wire::form::body_d, tag), &part, nullptr);
      }
      if (lead && !UCS_STATUS_IS_ERR(st) && (l.bodies & 4)) {
        actors::payload part;
        part.i = std::move(data.i);
        st = s.issue(ep, part.i.data(), part.i.size() * 4, wire::wire_tag(self, wire::form::body_i, tag), &part, nullptr);
      }
    }
    // The progress thread may be asleep; an operation in flight needs it.
    if (s.kicked && s.sleeping.load()) ucp_worker_signal(s.worker);
  }
  const bool closed = s.closed;
  s.lock.unlock();
  if (closed) return unexpected(errc::transport_error, "ucx transport: closed");
  if (!ep) return unexpected(errc::transport_error, unreachable(peer));
  if (UCS_STATUS_IS_ERR(st)) return unexpected(errc::transport_error, unreachable(peer) + " (" + ucs_text(st) + ")");
  return {};
}

void ucx_receive(void* p, int, int peer, std::uint64_t tag, actors::receive_callback done) {
  auto& s = *static_cast<ucx_state*>(p);
  if (peer < 0 || peer >= s.world) return done(unexpected(errc::transport_error, "ucx transport: no rank " + std::to_string(peer)));
  s.table.receive(peer, tag & wire::loom_tag_mask, std::move(done));
}

void ucx_abort(void* p, const loom::error& why) { static_cast<ucx_state*>(p)->table.abort(why); }

std::vector<std::uint8_t> address_of(void* state) {
  auto& s = *static_cast<ucx_state*>(state);
  std::vector<std::uint8_t> out;
  s.lock.lock_for_send();
  ucp_address_t* address = nullptr;
  std::size_t length = 0;
  if (!s.closed && ucp_worker_get_address(s.worker, &address, &length) == UCS_OK) {
    out.assign(reinterpret_cast<std::uint8_t*>(address), reinterpret_cast<std::uint8_t*>(address) + length);
    ucp_worker_release_address(s.worker, address);
  }
  s.lock.unlock();
  return out;
}

expected<void> connect_to(void* state, const std::vector<std::vector<std::uint8_t>>& addresses) {
  auto& s = *static_cast<ucx_state*>(state);
  if (static_cast<int>(addresses.size()) != s.world)
    return unexpected(errc::transport_error, "ucx: " + std::to_string(addresses.size()) + " addresses for " + std::to_string(s.world) + " ranks");
  expected<void> result;
  s.lock.lock_for_send();
  for (int r = 0; r < s.world && result && !s.closed; ++r) {
    if (r == s.rank || s.endpoints[r]) continue;
    auto* arg = new std::pair<ucx_state*, int>(&s, r);
    s.error_args.push_back(arg);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(addresses[r].data());
    ep.err_mode = peer_error_mode();
    ep.err_handler.cb = ucx_state::on_ep_error;
    ep.err_handler.arg = arg;
    if (ucs_status_t st = ucp_ep_create(s.worker, &ep, &s.endpoints[r]); st != UCS_OK) {
      s.endpoints[r] = nullptr;
      result = unexpected(errc::transport_error, "ucx: connecting to rank " + std::to_string(r) + " failed: " + ucs_text(st));
    }
  }
  s.kicked = true;  // connecting may leave work (wire-up) for progress
  if (s.sleeping.load()) ucp_worker_signal(s.worker);
  s.lock.unlock();
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
  if (world < 1 || world > wire::max_ranks || rank < 0 || rank >= world)
    return unexpected(errc::transport_error, "ucx transport: rank " + std::to_string(rank) + " of " + std::to_string(world) +
                                                 " (at most " + std::to_string(wire::max_ranks) + " ranks)");
  keep_freed_blocks();
  auto s = std::make_shared<ucx_state>();
  s->rank = rank;
  s->world = world;
  s->table.reset(world);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  params.request_size = op_space;
  ucp_config_t* config = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: reading the configuration failed: " + ucs_text(st));
  ucs_status_t st = ucp_init(&params, config, &s->context);
  ucp_config_release(config);
  if (st != UCS_OK) return unexpected(errc::transport_error, "ucx: ucp_init failed: " + ucs_text(st));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // the progress thread and senders, one at a time (worker_lock)
  if (st = ucp_worker_create(s->context, &wp, &s->worker); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: ucp_worker_create failed: " + ucs_text(st));
  if (st = ucp_worker_get_efd(s->worker, &s->event_fd); st != UCS_OK)
    return unexpected(errc::transport_error, "ucx: no event descriptor for the worker: " + ucs_text(st));
  s->endpoints.assign(world, nullptr);
  s->inbox.resize(world);
  s->open_lead.assign(world, nullptr);
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
