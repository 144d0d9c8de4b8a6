#include "kernels/model/params.hpp"

#include <cmath>

namespace loom::model {

namespace {

std::uint64_t splitmix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t hash_name(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

void init_tensor(std::vector<float>& t, const std::string& name, std::uint64_t seed, float scale) {
  if (scale <= 0) {
    std::fill(t.begin(), t.end(), -scale);
    return;
  }
  std::uint64_t state = hash_name(name) ^ (seed * 0x9e3779b97f4a7c15ull);
  const float a = scale * std::sqrt(3.f);
  for (auto& x : t) {
    double u = static_cast<double>(splitmix(state) >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    x = static_cast<float>((2 * u - 1) * a);
  }
}

int param_set::add(std::string name, std::size_t size, bool replicated, bool decay, float init, std::uint64_t seed) {
  param p;
  p.name = std::move(name);
  p.value.resize(size);
  init_tensor(p.value, p.name, seed, init);
  p.grad.assign(size, 0.0);
  p.m.assign(size, 0.f);
  p.v.assign(size, 0.f);
  p.replicated = replicated;
  p.decay = decay;
  params_.push_back(std::move(p));
  return static_cast<int>(params_.size() - 1);
}

param_set::param_set(const model_shape& m, const std::vector<std::vector<int>>& local_experts, int first_layer, int layers,
                     bool first_stage, bool last_stage, std::uint64_t seed)
    : first_layer_(first_layer) {
  const std::size_t d = m.hidden, f = m.expert_ffn, fs = m.shared_ffn, E = m.experts;
  const float s = m.init_scale;
  if (first_stage) edges_.embed = add("embed", m.vocab * d, true, true, 1.0f, seed);
  for (int l = 0; l < layers; ++l) {
    const std::string p = "layer" + std::to_string(first_layer + l) + ".";
    layer_slots ls;
    ls.norm1 = add(p + "attn.norm1", d, true, false, -1.f, seed);
    ls.wqkv = add(p + "attn.wqkv", d * 3 * d, true, true, s, seed);
    ls.wo = add(p + "attn.wo", d * d, true, true, s, seed);
    ls.norm2 = add(p + "attn.norm2", d, true, false, -1.f, seed);
    ls.router = add(p + "router.w", d * E, true, true, s, seed);
    ls.router_bias = add(p + "router.bias", E, true, false, 0.f, seed);
    params_[ls.router_bias].trainable = false;
    if (fs > 0) {
      ls.shared_w1 = add(p + "shared.w1", d * fs, true, true, s, seed);
      ls.shared_w3 = add(p + "shared.w3", d * fs, true, true, s, seed);
      ls.shared_w2 = add(p + "shared.w2", fs * d, true, true, s, seed);
    }
    ls.slot_expert = local_experts.at(l);
    for (int e : ls.slot_expert) {
      const std::string q = p + "expert" + std::to_string(e) + ".";
      ls.expert_w1.push_back(add(q + "w1", d * f, false, true, s, seed));
      ls.expert_w3.push_back(add(q + "w3", d * f, false, true, s, seed));
      ls.expert_w2.push_back(add(q + "w2", f * d, false, true, s, seed));
    }
    layers_.push_back(std::move(ls));
  }
  if (last_stage) {
    edges_.final_norm = add("final_norm", d, true, false, -1.f, seed);
    edges_.head = add("head", d * m.vocab, true, true, s, seed);
  }
}

std::string param_set::expert_name(int local_layer, int expert, const char* tensor) const {
  return "layer" + std::to_string(first_layer_ + local_layer) + ".expert" + std::to_string(expert) + "." + tensor;
}

void param_set::assign_slot(int local_layer, int slot, int expert, std::vector<std::vector<float>> state) {
  auto& ls = layers_[local_layer];
  ls.slot_expert[slot] = expert;
  const int ids[3] = {ls.expert_w1[slot], ls.expert_w3[slot], ls.expert_w2[slot]};
  const char* names[3] = {"w1", "w3", "w2"};
  for (int t = 0; t < 3; ++t) {
    param& p = params_[ids[t]];
    p.name = expert_name(local_layer, expert, names[t]);
    p.value = std::move(state[3 * t]);
    p.m = std::move(state[3 * t + 1]);
    p.v = std::move(state[3 * t + 2]);
    std::fill(p.grad.begin(), p.grad.end(), 0.0);
  }
}

std::vector<std::vector<float>> param_set::slot_state(int local_layer, int slot) const {
  const auto& ls = layers_[local_layer];
  std::vector<std::vector<float>> out;
  for (int id : {ls.expert_w1[slot], ls.expert_w3[slot], ls.expert_w2[slot]}) {
    out.push_back(params_[id].value);
    out.push_back(params_[id].m);
    out.push_back(params_[id].v);
  }
  return out;
}

void param_set::zero_grads() {
  for (auto& p : params_) std::fill(p.grad.begin(), p.grad.end(), 0.0);
}

std::size_t param_set::bytes() const {
  std::size_t b = 0;
  for (const auto& p : params_) b += p.value.size() * (sizeof(float) * 3 + sizeof(double));
  return b;
}

}  // namespace loom::model
