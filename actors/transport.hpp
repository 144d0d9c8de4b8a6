// The data plane as actors see it: a transport moves tagged payloads between ranks.
//
// A transport is a small table of operations over an opaque state, in the manner of NCCL's
// transports, so that `local` (one process), `ucx` and `nccl` can stand behind the same actors.
// Transports that have no collectives of their own build them from their sends and receives
// (actors/transport_collectives.hpp).
// Sends are buffered and complete at once from the sender's view; a receive names its source and
// tag and completes through a callback, on whatever thread delivers the data. Callbacks must only
// hand the payload to an actor (a message), never run actor code themselves.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support/expected.hpp"

namespace loom::actors {

// What travels: float rows, doubles (gradient sums), integers (counts).
// GPU memory a payload carries between processes, for a transport that moves it device to device
// (`nccl`): `bytes` at `data` on GPU `device`, holding the data once the CUDA event `ready` (a
// cudaEvent_t; null: already) has happened.
// - Sending: the transport makes its stream wait on `ready`, enqueues the transfer, then calls
//   retire(stream) (the sender's memory may be reused once that stream is past the transfer) and drops it.
// - Receiving: the transport allocated `data` stream-ordered (cudaMallocAsync); a consumer that keeps the
//   memory takes it by setting `data` to null and frees it stream-ordered itself; otherwise `release`
//   frees it when the buffer goes.
struct device_buffer {
  void* data = nullptr;
  std::size_t bytes = 0;
  int device = 0;
  void* ready = nullptr;
  std::shared_ptr<void> keep;                 // whatever must live as long as the buffer (the sender's tensor, its event)
  std::function<void(void* stream)> retire;   // sending: see above
  std::function<void(void* data)> release;    // receiving: see above
  device_buffer() = default;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() {
    if (data && release) release(data);
  }
};

struct payload {
  std::vector<float> f;
  std::vector<double> d;
  std::vector<std::int32_t> i;
  // Rows in GPU memory (the cuda backend's device_block): only a transport that carries device memory
  // (`local`, between virtual ranks of one process) moves them; for the others the cuda backend turns
  // them into host data first (gpu_leave_process) and back on arrival.
  std::shared_ptr<void> device;
  std::size_t device_bytes = 0;
  // GPU memory on its way between processes (see device_buffer; transports with moves_device_buffers).
  std::shared_ptr<device_buffer> wire;
  std::size_t bytes() const {
    return f.size() * 4 + d.size() * 8 + i.size() * 4 + device_bytes + (wire ? wire->bytes : 0);
  }
};

// Identifies one message between two ranks within a step; both sides build it from the same facts.
enum class traffic : std::uint8_t {
  pipeline_activation, pipeline_gradient, dispatch, combine, dispatch_backward, combine_backward, grad_sync, control,
  expert_migration
};

struct tag {
  traffic kind = traffic::control;
  std::uint16_t pipeline = 0;
  std::uint16_t stage = 0;
  std::uint16_t layer = 0;
  std::uint32_t microbatch = 0;
  // 48 bits, so a transport can add the sender's rank above them: kind 4, pipeline 4, stage 10,
  // layer 10, microbatch 20 bits.
  std::uint64_t pack() const {
    return (static_cast<std::uint64_t>(kind) & 0xf) << 44 | (static_cast<std::uint64_t>(pipeline) & 0xf) << 40 |
           (static_cast<std::uint64_t>(stage) & 0x3ff) << 30 | (static_cast<std::uint64_t>(layer) & 0x3ff) << 20 |
           (static_cast<std::uint64_t>(microbatch) & 0xfffff);
  }
};
inline constexpr std::uint64_t tag_bits = 48;

using receive_callback = std::function<void(expected<payload>)>;
// An all-to-all's result: what each member of the group sent, in the group's order.
using all_to_all_callback = std::function<void(expected<std::vector<payload>>)>;
using barrier_callback = std::function<void(expected<void>)>;

// The operations of one transport. `state` is the transport's own; `self` is the calling rank.
// Groups are lists of global ranks in the same order on every member, `self` among them.
struct transport_ops {
  const char* name;
  // What the other ranks need to reach this one (empty where nothing is needed), handed to every
  // rank's `connect` through the control plane: addresses[r] is rank r's.
  std::vector<std::uint8_t> (*address)(void* state);
  expected<void> (*connect)(void* state, const std::vector<std::vector<std::uint8_t>>& addresses);
  // Queues `data` for rank `peer`; never blocks. An error means the peer is unreachable.
  expected<void> (*send)(void* state, int self, int peer, std::uint64_t tag, payload data);
  // Calls `done` once the matching payload from `peer` has arrived (possibly at once).
  void (*receive)(void* state, int self, int peer, std::uint64_t tag, receive_callback done);
  // Sends out[i] to group[i] and calls `done` once every member's payload for us has arrived (our
  // own entry comes straight back). Every member calls it with the same group and tag.
  void (*all_to_all)(void* state, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<payload> out,
                     all_to_all_callback done);
  // Calls `done` once every member of `group` has entered the barrier with this tag.
  void (*barrier)(void* state, int self, const std::vector<int>& group, std::uint64_t tag, barrier_callback done);
  // Fails every pending receive of every rank with `why` (the experiment is being torn down).
  void (*abort)(void* state, const loom::error& why);
  // Whether payloads may hold GPU memory (payload::device): true where sender and receiver share the
  // process. Otherwise the cuda backend stages GPU rows through host memory before a send.
  bool carries_device_memory = false;
  // Whether it moves payload::wire buffers from GPU to GPU between processes (nccl).
  bool moves_device_buffers = false;
};

// A rank's handle on a transport.
class transport {
 public:
  transport() = default;
  transport(const transport_ops* ops, std::shared_ptr<void> state, int rank, int size)
      : ops_(ops), state_(std::move(state)), rank_(rank), size_(size) {}

  std::vector<std::uint8_t> address() const { return ops_->address(state_.get()); }
  expected<void> connect(const std::vector<std::vector<std::uint8_t>>& addresses) const { return ops_->connect(state_.get(), addresses); }
  expected<void> send(int peer, tag t, payload data) const { return ops_->send(state_.get(), rank_, peer, t.pack(), std::move(data)); }
  void receive(int peer, tag t, receive_callback done) const { ops_->receive(state_.get(), rank_, peer, t.pack(), std::move(done)); }
  void all_to_all(const std::vector<int>& group, tag t, std::vector<payload> out, all_to_all_callback done) const {
    ops_->all_to_all(state_.get(), rank_, group, t.pack(), std::move(out), std::move(done));
  }
  void barrier(const std::vector<int>& group, tag t, barrier_callback done) const {
    ops_->barrier(state_.get(), rank_, group, t.pack(), std::move(done));
  }
  void abort(const loom::error& why) const { ops_->abort(state_.get(), why); }
  // The same operations with a tag already packed: for a transport layered on this one.
  expected<void> send_packed(int peer, std::uint64_t t, payload data) const { return ops_->send(state_.get(), rank_, peer, t, std::move(data)); }
  void receive_packed(int peer, std::uint64_t t, receive_callback done) const { ops_->receive(state_.get(), rank_, peer, t, std::move(done)); }
  void barrier_packed(const std::vector<int>& group, std::uint64_t t, barrier_callback done) const {
    ops_->barrier(state_.get(), rank_, group, t, std::move(done));
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  const char* name() const { return ops_ ? ops_->name : "none"; }
  bool valid() const { return ops_ != nullptr; }
  bool carries_device_memory() const { return ops_ && ops_->carries_device_memory; }
  bool moves_device_buffers() const { return ops_ && ops_->moves_device_buffers; }

 private:
  const transport_ops* ops_ = nullptr;
  std::shared_ptr<void> state_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace loom::actors
