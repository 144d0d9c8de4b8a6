#include "runtime/transport/local_transport.hpp"

#include "actors/transport_collectives.hpp"

#include <deque>
#include <map>
#include <mutex>
#include <tuple>

namespace loom::transport {

namespace {

struct local_state {
  int ranks = 0;
  std::mutex mutex;
  using key = std::tuple<int, int, std::uint64_t>;  // (from, to, tag)
  std::map<key, std::deque<actors::payload>> arrived;
  std::map<key, std::deque<actors::receive_callback>> waiting;
  bool aborted = false;
  loom::error why;
};

expected<void> local_send(void* p, int self, int peer, std::uint64_t tag, actors::payload data) {
  auto& s = *static_cast<local_state*>(p);
  if (peer < 0 || peer >= s.ranks) return unexpected(errc::transport_error, "local transport: no rank " + std::to_string(peer));
  actors::receive_callback deliver;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.aborted) return unexpected(s.why);
    local_state::key k{self, peer, tag};
    auto it = s.waiting.find(k);
    if (it != s.waiting.end() && !it->second.empty()) {
      deliver = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) s.waiting.erase(it);
    } else {
      s.arrived[k].push_back(std::move(data));
      return {};
    }
  }
  deliver(std::move(data));  // outside the lock: the callback may send further messages
  return {};
}

void local_receive(void* p, int self, int peer, std::uint64_t tag, actors::receive_callback done) {
  auto& s = *static_cast<local_state*>(p);
  expected<actors::payload> result{actors::payload{}};
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.aborted) {
      result = unexpected(s.why);
    } else {
      local_state::key k{peer, self, tag};
      auto it = s.arrived.find(k);
      if (it == s.arrived.end() || it->second.empty()) {
        s.waiting[k].push_back(std::move(done));
        return;
      }
      result = std::move(it->second.front());
      it->second.pop_front();
      if (it->second.empty()) s.arrived.erase(it);
    }
  }
  done(std::move(result));  // outside the lock
}

void local_abort(void* p, const loom::error& why) {
  auto& s = *static_cast<local_state*>(p);
  std::map<local_state::key, std::deque<actors::receive_callback>> waiting;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.aborted = true;
    s.why = why;
    waiting.swap(s.waiting);
    s.arrived.clear();
  }
  for (auto& [k, callbacks] : waiting)
    for (auto& cb : callbacks) cb(unexpected(why));
}

// One process: nothing to exchange, nothing to connect.
std::vector<std::uint8_t> local_address(void*) { return {}; }
expected<void> local_connect(void*, const std::vector<std::vector<std::uint8_t>>&) { return {}; }
void local_all_to_all(void* p, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<actors::payload> out,
                      actors::all_to_all_callback done);
void local_barrier(void* p, int self, const std::vector<int>& group, std::uint64_t tag, actors::barrier_callback done);

const actors::transport_ops local_ops = {"local",          local_address,  local_connect, local_send, local_receive,
                                         local_all_to_all, local_barrier,  local_abort,
                                         /*carries_device_memory=*/true};

void local_all_to_all(void* p, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<actors::payload> out,
                      actors::all_to_all_callback done) {
  actors::all_to_all_by_messages(local_ops, p, self, group, tag, std::move(out), std::move(done));
}
void local_barrier(void* p, int self, const std::vector<int>& group, std::uint64_t tag, actors::barrier_callback done) {
  actors::barrier_by_messages(local_ops, p, self, group, tag, std::move(done));
}

}  // namespace

std::shared_ptr<void> make_local_transport(int ranks) {
  auto s = std::make_shared<local_state>();
  s->ranks = ranks;
  return s;
}

actors::transport local_handle(const std::shared_ptr<void>& state, int rank) {
  return actors::transport(&local_ops, state, rank, static_cast<local_state*>(state.get())->ranks);
}

}  // namespace loom::transport
