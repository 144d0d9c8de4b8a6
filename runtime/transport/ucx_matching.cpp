#include "runtime/transport/ucx_matching.hpp"

#include <string>
#include <utility>

namespace loom::transport {

namespace {
constexpr std::size_t spare_nodes = 64;
}

void ucx_matching::reset(int world) {
  std::lock_guard<std::mutex> lock(mutex_);
  slots_.clear();
  lost_.assign(world, 0);
}

ucx_matching::slot& ucx_matching::find_or_make(std::uint64_t k) {
  if (auto it = slots_.find(k); it != slots_.end()) return it->second;
  if (spare_.empty()) return slots_[k];
  auto node = std::move(spare_.back());
  spare_.pop_back();
  node.key() = k;
  return slots_.insert(std::move(node)).position->second;
}

void ucx_matching::drop_if_empty(map::iterator it) {
  if (!it->second.arrived.empty() || !it->second.waiting.empty()) return;
  if (spare_.size() < spare_nodes) spare_.push_back(slots_.extract(it));
  else slots_.erase(it);
}

void ucx_matching::deliver(delivery* items, std::size_t count) {
  // The matched receives, called once the lock is released (a thread's own list: the progress thread
  // and a thread sending to itself may deliver at once).
  thread_local std::vector<std::pair<actors::receive_callback, expected<actors::payload>>> matched;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (std::size_t k = 0; k < count; ++k) {
      delivery& d = items[k];
      const std::uint64_t id = key(d.from, d.tag);
      auto it = slots_.find(id);
      if (it != slots_.end() && !it->second.waiting.empty()) {
        matched.emplace_back(it->second.waiting.pop(), std::move(d.result));
        drop_if_empty(it);
      } else {
        find_or_make(id).arrived.push(std::move(d.result));
      }
    }
  }
  // A callback may deliver to this thread's list again (sending to itself): take the list first.
  auto now = std::move(matched);
  matched.clear();
  for (auto& [done, result] : now) done(std::move(result));
  now.clear();
  if (matched.empty()) matched = std::move(now);  // keep the storage
}

void ucx_matching::receive(int peer, std::uint64_t tag, actors::receive_callback done) {
  std::unique_lock<std::mutex> lock(mutex_);
  const std::uint64_t id = key(peer, tag);
  if (auto it = slots_.find(id); it != slots_.end() && !it->second.arrived.empty()) {
    auto result = it->second.arrived.pop();
    drop_if_empty(it);
    lock.unlock();
    return done(std::move(result));
  }
  if (aborted_.load()) {
    auto why = why_;
    lock.unlock();
    return done(unexpected(std::move(why)));
  }
  if (peer >= 0 && peer < static_cast<int>(lost_.size()) && lost_[peer]) {
    lock.unlock();
    return done(unexpected(errc::transport_error, "rank " + std::to_string(peer) + " is unreachable"));
  }
  find_or_make(id).waiting.push(std::move(done));
}

void ucx_matching::take_waiting(int peer, std::vector<actors::receive_callback>& out) {
  for (auto it = slots_.begin(); it != slots_.end();) {
    auto here = it++;
    if (peer >= 0 && from_of(here->first) != peer) continue;
    while (!here->second.waiting.empty()) out.push_back(here->second.waiting.pop());
    drop_if_empty(here);
  }
}

void ucx_matching::abort(const loom::error& why) {
  std::vector<actors::receive_callback> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    why_ = why;
    aborted_.store(true);
    take_waiting(-1, failed);
  }
  for (auto& done : failed) done(unexpected(why));
}

void ucx_matching::lose(int peer, const loom::error& why) {
  std::vector<actors::receive_callback> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (peer >= 0 && peer < static_cast<int>(lost_.size())) lost_[peer] = 1;
    take_waiting(peer, failed);
  }
  for (auto& done : failed) done(unexpected(why));
}

std::optional<loom::error> ucx_matching::refuses_sends() {
  if (!aborted_.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex_);
  return why_;
}

}  // namespace loom::transport
