#include "kernels/cuda/model/device_params.hpp"

#include <cstdint>
#include <cstring>

#include "kernels/cuda/check.hpp"

namespace loom::cuda::model {

namespace {

std::uint16_t to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                      // round to nearest even
  return static_cast<std::uint16_t>(u >> 16);
}

// Where a host tensor [rows, cols] sits in a device matrix: from element `offset`, rows `ld` apart,
// starting at column `col`.
struct placement {
  int host = -1;  // index in the param_set
  std::size_t offset = 0;
  int rows = 1, cols = 1, ld = 1, col = 0;
};

// One device tensor (values and gradients) and the host tensors packed into it.
struct packed {
  dtensor* value = nullptr;
  dtensor* grad = nullptr;  // null: not trained by gradient (the router bias)
  std::size_t elements = 0;
  bool fp32 = false;        // values in fp32 (else bf16)
  std::vector<placement> parts;
};

placement whole(int host, std::size_t n) { return {host, 0, 1, static_cast<int>(n), static_cast<int>(n), 0}; }

// The packing of every tensor of a chunk, in one list, for upload and download alike.
std::vector<packed> layout(const loom::model::model_shape& m, const loom::model::param_set& host,
                           std::vector<device_layer_params>& layers, device_edge_params& edges) {
  const int d = m.hidden, E = m.experts, f = m.expert_ffn, fs = m.shared_ffn;
  std::vector<packed> out;
  auto add = [&](dtensor& v, dtensor* g, std::size_t n, bool fp32, std::vector<placement> parts) {
    out.push_back({&v, g, n, fp32, std::move(parts)});
  };
  const auto& e = host.edges();
  if (e.embed >= 0) add(edges.embed, &edges.g_embed, host.at(e.embed).value.size(), false, {whole(e.embed, host.at(e.embed).value.size())});
  if (e.final_norm >= 0) add(edges.final_norm, &edges.g_final_norm, d, false, {whole(e.final_norm, d)});
  if (e.head >= 0) add(edges.head, &edges.g_head, host.at(e.head).value.size(), false, {whole(e.head, host.at(e.head).value.size())});
  for (int l = 0; l < host.layers(); ++l) {
    const auto& ls = host.layer(l);
    auto& L = layers[l];
    add(L.norm1, &L.g_norm1, d, false, {whole(ls.norm1, d)});
    add(L.wqkv, &L.g_wqkv, std::size_t(d) * 3 * d, false, {whole(ls.wqkv, std::size_t(d) * 3 * d)});
    add(L.wo, &L.g_wo, std::size_t(d) * d, false, {whole(ls.wo, std::size_t(d) * d)});
    add(L.norm2, &L.g_norm2, d, false, {whole(ls.norm2, d)});
    add(L.router, &L.g_router, std::size_t(d) * E, false, {whole(ls.router, std::size_t(d) * E)});
    add(L.router_bias, nullptr, E, true, {whole(ls.router_bias, E)});
    if (fs > 0) {
      add(L.shared_w13, &L.g_shared_w13, std::size_t(d) * 2 * fs, false,
          {{ls.shared_w1, 0, d, fs, 2 * fs, 0}, {ls.shared_w3, 0, d, fs, 2 * fs, fs}});
      add(L.shared_w2, &L.g_shared_w2, std::size_t(fs) * d, false, {whole(ls.shared_w2, std::size_t(fs) * d)});
    }
    const int slots = static_cast<int>(ls.slot_expert.size());
    std::vector<placement> w13, w2;
    for (int j = 0; j < slots; ++j) {
      w13.push_back({ls.expert_w1[j], std::size_t(j) * d * 2 * f, d, f, 2 * f, 0});
      w13.push_back({ls.expert_w3[j], std::size_t(j) * d * 2 * f, d, f, 2 * f, f});
      w2.push_back({ls.expert_w2[j], std::size_t(j) * f * d, f, d, d, 0});
    }
    add(L.experts_w13, &L.g_experts_w13, std::size_t(slots) * d * 2 * f, false, std::move(w13));
    add(L.experts_w2, &L.g_experts_w2, std::size_t(slots) * f * d, false, std::move(w2));
  }
  return out;
}

expected<void> upload_slots(device_pool& pool, device_layer_params& L, const loom::model::slot_map& map, cudaStream_t stream) {
  std::vector<int> offsets{0}, slots;
  for (const auto& c : map.copies) {
    slots.insert(slots.end(), c.begin(), c.end());
    offsets.push_back(static_cast<int>(slots.size()));
  }
  L.slots = map.slots();
  L.local_slots = map.slots_per_rank;
  for (auto [t, v] : {std::pair{&L.copy_offsets, &offsets}, std::pair{&L.copy_slots, &slots}}) {
    if (bytes_of(*t) < v->size() * sizeof(int)) {
      auto a = allocate(pool, v->size() * sizeof(int), stream);
      if (!a) return forward_error(a);
      *t = std::move(*a);
    }
    if (auto ok = check(cudaMemcpyAsync(t->get()->data(), v->data(), v->size() * sizeof(int), cudaMemcpyHostToDevice, stream),
                        "uploading a slot map");
        !ok)
      return ok;
  }
  return {};
}

}  // namespace

expected<device_params> device_params::create(device_pool& pool, const loom::model::model_shape& shape,
                                              const loom::model::param_set& host,
                                              const std::vector<loom::model::slot_map>& slots, cudaStream_t stream) {
  device_params p;
  p.pool_ = &pool;
  p.shape_ = shape;
  p.layers_.resize(host.layers());
  for (auto& t : layout(shape, host, p.layers_, p.edges_)) {
    auto v = allocate(pool, t.elements * (t.fp32 ? 4 : 2), stream);
    if (!v) return forward_error(v);
    *t.value = std::move(*v);
    if (t.grad) {
      auto g = allocate(pool, t.elements * 4, stream);
      if (!g) return forward_error(g);
      *t.grad = std::move(*g);
      if (auto ok = check(cudaMemsetAsync(t.grad->get()->data(), 0, t.elements * 4, stream), "zeroing gradients"); !ok)
        return forward_error(ok);
    }
  }
  if (auto ok = p.upload(host, slots, stream); !ok) return forward_error(ok);
  return p;
}

expected<void> device_params::upload(const loom::model::param_set& host, const std::vector<loom::model::slot_map>& slots,
                                     cudaStream_t stream) {
  for (auto& t : layout(shape_, host, layers_, edges_)) {
    const std::size_t bytes = t.elements * (t.fp32 ? 4 : 2);
    auto buffer = staging_.reserve(bytes, "staging memory");
    if (!buffer) return forward_error(buffer);
    // The staging buffer is reused by the next tensor: the previous copy must be done with it.
    if (auto ok = check(cudaStreamSynchronize(stream), "uploading parameters"); !ok) return ok;
    auto* fp32 = static_cast<float*>(*buffer);
    auto* bf16 = static_cast<std::uint16_t*>(*buffer);
    std::memset(*buffer, 0, bytes);  // padding between parts stays zero
    for (const auto& part : t.parts) {
      const auto& v = host.at(part.host).value;
      for (int r = 0; r < part.rows; ++r)
        for (int c = 0; c < part.cols; ++c) {
          const float x = v[std::size_t(r) * part.cols + c];
          const std::size_t at = part.offset + std::size_t(r) * part.ld + part.col + c;
          if (t.fp32) fp32[at] = x;
          else bf16[at] = to_bf16_bits(x);
        }
    }
    if (auto ok = check(cudaMemcpyAsync(t.value->get()->data(), *buffer, bytes, cudaMemcpyHostToDevice, stream), "uploading parameters");
        !ok)
      return ok;
  }
  for (int l = 0; l < static_cast<int>(layers_.size()); ++l)
    if (auto ok = upload_slots(*pool_, layers_[l], slots.at(l), stream); !ok) return ok;
  return check(cudaStreamSynchronize(stream), "uploading parameters");
}

expected<void> device_params::download_grads(loom::model::param_set& host, cudaStream_t stream) {
  for (auto& t : layout(shape_, host, layers_, edges_)) {
    if (!t.grad) continue;
    auto buffer = staging_.reserve(t.elements * 4, "staging memory");
    if (!buffer) return forward_error(buffer);
    const auto* g = static_cast<const float*>(*buffer);
    if (auto ok = check(cudaMemcpyAsync(*buffer, t.grad->get()->data(), t.elements * 4, cudaMemcpyDeviceToHost, stream),
                        "downloading gradients");
        !ok)
      return ok;
    if (auto ok = check(cudaStreamSynchronize(stream), "downloading gradients"); !ok) return ok;
    if (auto ok = check(cudaMemsetAsync(t.grad->get()->data(), 0, t.elements * 4, stream), "zeroing gradients"); !ok) return ok;
    for (const auto& part : t.parts) {
      auto& dst = host.at(part.host).grad;
      for (int r = 0; r < part.rows; ++r)
        for (int c = 0; c < part.cols; ++c) dst[std::size_t(r) * part.cols + c] += g[part.offset + std::size_t(r) * part.ld + part.col + c];
    }
  }
  return check(cudaStreamSynchronize(stream), "zeroing gradients");
}

std::size_t device_params::bytes() const {
  std::size_t n = 0;
  auto add = [&](const dtensor& t) { n += bytes_of(t); };
  for (const auto& L : layers_)
    for (const dtensor* t : {&L.norm1, &L.wqkv, &L.wo, &L.norm2, &L.router, &L.router_bias, &L.shared_w13, &L.shared_w2,
                             &L.experts_w13, &L.experts_w2, &L.g_norm1, &L.g_wqkv, &L.g_wo, &L.g_norm2, &L.g_router,
                             &L.g_shared_w13, &L.g_shared_w2, &L.g_experts_w13, &L.g_experts_w2})
      add(*t);
  for (const dtensor* t : {&edges_.embed, &edges_.final_norm, &edges_.head, &edges_.g_embed, &edges_.g_final_norm, &edges_.g_head})
    add(*t);
  return n;
}

}  // namespace loom::cuda::model
