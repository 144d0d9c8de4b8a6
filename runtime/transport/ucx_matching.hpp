// The `ucx` transport's matching table: payloads that arrived before their receive, and receives
// posted before their payload, per (sender, tag), each kept in order. Thread-safe: the progress thread
// delivers, any thread receives. In steady traffic it allocates nothing (table nodes and queues are
// reused), and it calls receive callbacks with its lock released, so a callback may send or receive.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "actors/transport.hpp"
#include "support/expected.hpp"

namespace loom::transport {

// A payload complete and in its sender's order, or the error that lost it.
struct delivery {
  int from;
  std::uint64_t tag;
  expected<actors::payload> result;
};

class ucx_matching {
 public:
  void reset(int world);
  // Hands each payload to the receive waiting for it, or keeps it for the next.
  void deliver(delivery* items, std::size_t count);
  // Calls `done` with the first payload kept for (peer, tag), or once one comes; at once with an error
  // after abort() or once the peer is lost (payloads kept from before still come first).
  void receive(int peer, std::uint64_t tag, actors::receive_callback done);
  // Fails every waiting receive, and later ones, with `why`.
  void abort(const loom::error& why);
  // Fails the receives waiting on `peer`, and later ones, with `why`.
  void lose(int peer, const loom::error& why);
  // The reason sends are refused: the transport was aborted.
  std::optional<loom::error> refuses_sends();

 private:
  template <class T>
  struct fifo {  // a queue that keeps its storage when emptied
    std::vector<T> items;
    std::size_t head = 0;
    bool empty() const { return head == items.size(); }
    void push(T v) { items.push_back(std::move(v)); }
    T pop() {
      T v = std::move(items[head++]);
      if (head == items.size()) {
        items.clear();
        head = 0;
      }
      return v;
    }
  };
  struct slot {
    fifo<expected<actors::payload>> arrived;
    fifo<actors::receive_callback> waiting;
  };
  using map = std::unordered_map<std::uint64_t, slot>;

  static std::uint64_t key(int from, std::uint64_t tag) { return static_cast<std::uint64_t>(from) << actors::tag_bits | tag; }
  static int from_of(std::uint64_t key) { return static_cast<int>(key >> actors::tag_bits); }
  slot& find_or_make(std::uint64_t k);
  void drop_if_empty(map::iterator it);
  // Takes the waiting receives of `peer` (every peer: -1) out of the table.
  void take_waiting(int peer, std::vector<actors::receive_callback>& out);

  std::mutex mutex_;
  map slots_;
  std::vector<map::node_type> spare_;  // emptied nodes, reused for the next keys
  std::vector<char> lost_;
  std::atomic<bool> aborted_{false};
  loom::error why_;
};

}  // namespace loom::transport
