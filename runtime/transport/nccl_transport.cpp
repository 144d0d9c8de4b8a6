#include "runtime/transport/nccl_transport.hpp"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "actors/transport_collectives.hpp"
#include "runtime/transport/ucx_transport.hpp"

namespace loom::transport {

namespace {

// The last word of a header whose rows follow over NCCL; before it, the rows' size in two words.
constexpr std::int32_t wire_marker = 0x4e43434c;  // "NCCL"

std::string cuda_text(cudaError_t e) { return cudaGetErrorString(e); }
std::string nccl_text(ncclResult_t r) { return ncclGetErrorString(r); }

// One direction between this process and a peer.
struct channel {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::mutex mutex;  // sending side: the NCCL order and the header order stay the same
  // Sending side: buffers whose transfer is enqueued, kept until the event after it has happened.
  std::vector<std::pair<cudaEvent_t, std::shared_ptr<actors::device_buffer>>> in_flight;

  void reap() {
    std::size_t kept = 0;
    for (auto& f : in_flight) {
      if (cudaEventQuery(f.first) == cudaSuccess) {
        cudaEventDestroy(f.first);
        f.second.reset();
      } else {
        in_flight[kept++] = std::move(f);
      }
    }
    in_flight.resize(kept);
  }
};

struct nccl_state {
  int rank = 0, world = 1, device = 0;
  std::shared_ptr<void> ucx;
  actors::transport host;  // the ucx handle: headers and host payloads
  std::vector<ncclUniqueId> send_ids;  // [peer]: the channel rank -> peer, made here
  std::vector<std::unique_ptr<channel>> to, from;  // [peer]

  ~nccl_state() {
    if (ucx) ucx_close(ucx);  // no more arrivals: the hook below uses the channels
    cudaSetDevice(device);
    for (auto* side : {&to, &from})
      for (auto& c : *side) {
        if (!c) continue;
        if (c->stream) cudaStreamSynchronize(c->stream);
        c->reap();
        if (c->comm) ncclCommDestroy(c->comm);
        if (c->stream) cudaStreamDestroy(c->stream);
      }
  }

  // On the UCX progress thread, in each sender's order: a header of NCCL rows gets its receive.
  void on_arrival(int from_rank, actors::payload& p) {
    if (p.i.size() < 3 || p.i.back() != wire_marker) return;
    const std::size_t bytes = static_cast<std::size_t>(static_cast<std::uint32_t>(p.i[p.i.size() - 3])) |
                              (static_cast<std::size_t>(static_cast<std::uint32_t>(p.i[p.i.size() - 2])) << 31);
    p.i.resize(p.i.size() - 3);
    if (from_rank < 0 || from_rank >= world || !from[from_rank]) return;
    channel& c = *from[from_rank];
    auto fail = [&](const std::string& why) {  // the payload arrives without rows; the consumer reports it
      std::fprintf(stderr, "loom: nccl transport, rank %d: receiving %zu bytes from rank %d failed: %s\n", rank, bytes, from_rank,
                   why.c_str());
    };
    if (auto e = cudaSetDevice(device); e != cudaSuccess) return fail(cuda_text(e));
    void* data = nullptr;
    if (bytes > 0) {
      if (auto e = cudaMallocAsync(&data, bytes, c.stream); e != cudaSuccess) return fail(cuda_text(e));
      // In a channel from a peer, the peer is rank 0 and this process rank 1.
      if (auto r = ncclRecv(data, bytes, ncclUint8, 0, c.comm, c.stream); r != ncclSuccess) return fail(nccl_text(r));
    }
    cudaEvent_t ready = nullptr;
    if (auto e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming); e != cudaSuccess) return fail(cuda_text(e));
    cudaEventRecord(ready, c.stream);
    auto w = std::make_shared<actors::device_buffer>();
    w->data = data;
    w->bytes = bytes;
    w->device = device;
    w->ready = ready;
    w->keep = std::shared_ptr<void>(ready, [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
    w->release = [stream = c.stream](void* d) { cudaFreeAsync(d, stream); };
    p.wire = std::move(w);
  }
};

nccl_state& state_of(void* p) { return *static_cast<nccl_state*>(p); }

// address: [u32 size of the UCX address][UCX address][world x ncclUniqueId, one per peer]
std::vector<std::uint8_t> nccl_address(void* p) {
  auto& s = state_of(p);
  const auto ucx = s.host.address();
  const std::uint32_t n = static_cast<std::uint32_t>(ucx.size());
  std::vector<std::uint8_t> out(4 + ucx.size() + s.send_ids.size() * sizeof(ncclUniqueId));
  std::memcpy(out.data(), &n, 4);
  if (n) std::memcpy(out.data() + 4, ucx.data(), n);
  if (!s.send_ids.empty()) std::memcpy(out.data() + 4 + n, s.send_ids.data(), s.send_ids.size() * sizeof(ncclUniqueId));
  return out;
}

expected<void> nccl_connect(void* p, const std::vector<std::vector<std::uint8_t>>& addresses) {
  auto& s = state_of(p);
  if (static_cast<int>(addresses.size()) != s.world)
    return unexpected(errc::transport_error, "nccl transport: " + std::to_string(addresses.size()) + " addresses for " +
                                                 std::to_string(s.world) + " ranks");
  std::vector<std::vector<std::uint8_t>> ucx(s.world);
  std::vector<ncclUniqueId> to_me(s.world);  // [peer]: the id of the channel peer -> this rank
  for (int r = 0; r < s.world; ++r) {
    const auto& a = addresses[r];
    std::uint32_t n = 0;
    if (a.size() >= 4) std::memcpy(&n, a.data(), 4);
    if (a.size() != 4 + n + s.world * sizeof(ncclUniqueId))
      return unexpected(errc::transport_error, "nccl transport: rank " + std::to_string(r) +
                                                   "'s address is malformed (is every rank on the nccl transport?)");
    ucx[r].assign(a.begin() + 4, a.begin() + 4 + n);
    std::memcpy(&to_me[r], a.data() + 4 + n + s.rank * sizeof(ncclUniqueId), sizeof(ncclUniqueId));
  }
  if (auto ok = s.host.connect(ucx); !ok) return ok;
  if (auto e = cudaSetDevice(s.device); e != cudaSuccess)
    return unexpected(errc::transport_error, "nccl transport: cudaSetDevice(" + std::to_string(s.device) + "): " + cuda_text(e));
  int least = 0, greatest = 0;
  cudaDeviceGetStreamPriorityRange(&least, &greatest);
  s.to.resize(s.world);
  s.from.resize(s.world);
  for (int r = 0; r < s.world; ++r) {
    if (r == s.rank) continue;
    for (auto* side : {&s.to, &s.from}) {
      (*side)[r] = std::make_unique<channel>();
      if (auto e = cudaStreamCreateWithPriority(&(*side)[r]->stream, cudaStreamNonBlocking, greatest); e != cudaSuccess)
        return unexpected(errc::transport_error, "nccl transport: cudaStreamCreate: " + cuda_text(e));
    }
  }
  // The two-rank communicators one pair at a time, pairs in one global order (a < b, by a then b), so
  // every blocking init meets its peer without a cycle: a -> b first, then b -> a.
  for (int a = 0; a < s.world; ++a)
    for (int b = a + 1; b < s.world; ++b) {
      if (a != s.rank && b != s.rank) continue;
      const int peer = a == s.rank ? b : a;
      const bool low = a == s.rank;
      for (int direction = 0; direction < 2; ++direction) {
        const bool sending = (direction == 0) == low;  // a -> b: the lower rank sends
        channel& c = sending ? *s.to[peer] : *s.from[peer];
        const ncclUniqueId& id = sending ? s.send_ids[peer] : to_me[peer];
        if (auto x = ncclCommInitRank(&c.comm, 2, id, sending ? 0 : 1); x != ncclSuccess)
          return unexpected(errc::transport_error, std::string("nccl transport: channel ") + (sending ? "to" : "from") + " rank " +
                                                       std::to_string(peer) + ": " + nccl_text(x));
      }
    }
  return {};
}

expected<void> nccl_send(void* p, int self, int peer, std::uint64_t tag, actors::payload data) {
  auto& s = state_of(p);
  if (!data.wire) return s.host.send_packed(peer, tag, std::move(data));
  if (peer == self || peer < 0 || peer >= s.world || !s.to[peer])
    return unexpected(errc::transport_error, "nccl transport: no channel from rank " + std::to_string(self) + " to rank " + std::to_string(peer));
  channel& c = *s.to[peer];
  auto wire = std::move(data.wire);
  std::lock_guard<std::mutex> lock(c.mutex);
  if (auto e = cudaSetDevice(s.device); e != cudaSuccess) return unexpected(errc::transport_error, "nccl transport: " + cuda_text(e));
  c.reap();
  // The header goes first: the receiver posts its ncclRecv when it sees it, and NCCL may block the first
  // send on a channel until the peer's receive shows up (connection setup at first use).
  const std::size_t bytes = wire->bytes;
  data.i.push_back(static_cast<std::int32_t>(bytes & 0x7fffffff));
  data.i.push_back(static_cast<std::int32_t>(bytes >> 31));
  data.i.push_back(wire_marker);
  if (auto sent = s.host.send_packed(peer, tag, std::move(data)); !sent) return sent;
  if (wire->ready)
    if (auto e = cudaStreamWaitEvent(c.stream, static_cast<cudaEvent_t>(wire->ready), 0); e != cudaSuccess)
      return unexpected(errc::transport_error, "nccl transport: waiting for the rows: " + cuda_text(e));
  if (bytes > 0)
    if (auto r = ncclSend(wire->data, bytes, ncclUint8, 1, c.comm, c.stream); r != ncclSuccess)
      return unexpected(errc::transport_error, "nccl transport: ncclSend to rank " + std::to_string(peer) + ": " + nccl_text(r));
  if (wire->retire) wire->retire(c.stream);
  cudaEvent_t sent = nullptr;
  if (auto e = cudaEventCreateWithFlags(&sent, cudaEventDisableTiming); e != cudaSuccess)
    return unexpected(errc::transport_error, "nccl transport: " + cuda_text(e));
  cudaEventRecord(sent, c.stream);
  c.in_flight.emplace_back(sent, std::move(wire));
  return {};
}

void nccl_receive(void* p, int, int peer, std::uint64_t tag, actors::receive_callback done) {
  state_of(p).host.receive_packed(peer, tag, std::move(done));
}

extern const actors::transport_ops nccl_ops;

void nccl_all_to_all(void* p, int self, const std::vector<int>& group, std::uint64_t tag, std::vector<actors::payload> out,
                     actors::all_to_all_callback done) {
  actors::all_to_all_by_messages(nccl_ops, p, self, group, tag, std::move(out), std::move(done));
}

void nccl_barrier(void* p, int, const std::vector<int>& group, std::uint64_t tag, actors::barrier_callback done) {
  state_of(p).host.barrier_packed(group, tag, std::move(done));
}

void nccl_abort(void* p, const loom::error& why) { state_of(p).host.abort(why); }

const actors::transport_ops nccl_ops = {"nccl",          nccl_address,  nccl_connect, nccl_send,  nccl_receive,
                                        nccl_all_to_all, nccl_barrier,  nccl_abort,
                                        /*carries_device_memory=*/false, /*moves_device_buffers=*/true};

}  // namespace

bool nccl_available() { return true; }

expected<std::shared_ptr<void>> make_nccl_transport(int rank, int world, int device) {
  auto ucx = make_ucx_transport(rank, world);
  if (!ucx) return unexpected(ucx.error());
  auto s = std::make_shared<nccl_state>();
  s->rank = rank;
  s->world = world;
  s->device = device;
  s->ucx = *ucx;
  s->host = ucx_handle(s->ucx);
  if (auto e = cudaSetDevice(device); e != cudaSuccess)
    return unexpected(errc::transport_error, "nccl transport: GPU " + std::to_string(device) + ": " + cuda_text(e));
  s->send_ids.resize(world);
  for (int r = 0; r < world; ++r)
    if (r != rank)
      if (auto x = ncclGetUniqueId(&s->send_ids[r]); x != ncclSuccess)
        return unexpected(errc::transport_error, "nccl transport: ncclGetUniqueId: " + nccl_text(x));
  ucx_on_arrival(s->ucx, [raw = s.get()](int from, actors::payload& p) { raw->on_arrival(from, p); });
  return std::shared_ptr<void>(s);
}

void nccl_close(const std::shared_ptr<void>& state) {
  auto& s = state_of(state.get());
  if (s.ucx) ucx_close(s.ucx);
}

actors::transport nccl_handle(const std::shared_ptr<void>& state) {
  auto& s = state_of(state.get());
  return actors::transport(&nccl_ops, state, s.rank, s.world);
}

}  // namespace loom::transport
