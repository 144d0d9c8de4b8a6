// One MoE layer, forward + backward (for inputs and for weights), on one GPU with ep = 1, through
// kernels/cuda/model/moe_layer.hpp exactly as the runtime calls it, everything on one stream:
//   attention_forward, dispatch_send -> dispatch_receive (the blocks handed straight back), mlp_forward,
//   combine_send -> combine_receive; then with s.dy set: combine_backward_send -> receive,
//   mlp_backward_input, dispatch_backward_send -> receive, attention_backward_input, mlp_backward_weight,
//   attention_backward_weight.
// dispatch_send waits once for the route plan's counts (cudaStreamSynchronize): that is in the timing.
//
// Timing: CUDA events around the whole microbatch, warm-up, then the median of --iters runs; a fresh
// device_layer_state each run (as the runtime makes per microbatch), its memory from the pool. Then a
// second pass times each component call alone (stream synchronised before it) for the breakdown.
// Useful FLOPs: the GEMMs (qkv, out projection, router, shared expert, the experts on the T * k routed
// rows) and causal attention (half of the S^2 products), forward 1x, backward 2x (inputs + weights;
// attention's recomputation of the probabilities is not counted). The dense bf16 GEMM rate (cublasLt,
// 8192^3) is measured in the same process for the fraction.
//
// Prints "layer <key> <value>" lines (bench/gpu.sh reads them) with a readable line after each.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/cuda/check.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/memory.hpp"
#include "kernels/cuda/model/device_params.hpp"
#include "kernels/cuda/model/moe_layer.hpp"
#include "kernels/model/config.hpp"
#include "kernels/model/params.hpp"

namespace {

namespace lc = loom::cuda;
namespace lm = loom::cuda::model;
namespace model = loom::model;
using loom::errc;
using loom::expected;
using loom::forward_error;
using loom::unexpected;
using bf16 = lc::bf16;

// ---- options ------------------------------------------------------------------------------------------

struct options {
  int seqs = 1, seq_len = 4096;  // 4096 tokens: one sequence of 4096
  int hidden = 2048, heads = 16, experts = 64, top_k = 6, ffn = 1408, shared_ffn = 2816;
  model::gating gate = model::gating::softmax;
  float router_skew = 0.f;
  int warmup = 3, iters = 20, breakdown_iters = 10;
  bool dense = true;
  std::uint64_t seed = 1;
  bool help = false;
};

const char* usage =
    "usage: moe_layer_bench [options]\n"
    "One MoE layer forward + backward on one GPU (ep = 1) through kernels/cuda/model/moe_layer.hpp.\n"
    "Prints 'layer <key> <value>' lines (bench/gpu.sh reads them).\n"
    "\n"
    "  --iters N            timed runs of the whole forward + backward (median reported), default 20\n"
    "  --warmup N           untimed runs first, default 3\n"
    "  --breakdown-iters N  runs of the per-component pass (0: skip it), default 10\n"
    "  --no-dense           skip the dense GEMM rate (8192^3) and the fraction\n"
    "  --seqs N             sequences, default 1\n"
    "  --seq-len N          tokens per sequence, default 4096 (tokens = seqs x seq-len)\n"
    "  --hidden N           model width, default 2048\n"
    "  --heads N            attention heads, default 16 (head_dim = hidden / heads: 64 or 128)\n"
    "  --experts N          routed experts, default 64 (<= 1024)\n"
    "  --top-k N            experts per token, default 6\n"
    "  --ffn N              expert FFN width, default 1408\n"
    "  --shared-ffn N       shared expert FFN width (0: none), default 2816\n"
    "  --gate softmax|sigmoid  gating, default softmax\n"
    "  --router-skew X      model_shape::router_skew (expert popularity skew), default 0\n"
    "  --seed N             weights (param_set seed) and inputs, default 1\n"
    "  --help               this text\n";

expected<long long> parse_int(std::string_view name, std::string_view text, long long lo, long long hi) {
  long long v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    return unexpected(errc::invalid_argument, std::string(name) + ": '" + std::string(text) + "' is not an integer");
  if (v < lo || v > hi)
    return unexpected(errc::invalid_argument, std::string(name) + ": " + std::to_string(v) + " is outside [" +
                                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

expected<options> parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      o.help = true;
      continue;
    }
    if (arg == "--no-dense") {
      o.dense = false;
      continue;
    }
    std::string_view name = arg, value;
    bool have_value = false;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      have_value = true;
    }
    struct int_opt {
      const char* name;
      int* field;
      long long lo, hi;
    };
    const int_opt ints[] = {
        {"--iters", &o.iters, 1, 100000},        {"--warmup", &o.warmup, 0, 100000},
        {"--breakdown-iters", &o.breakdown_iters, 0, 100000},
        {"--seqs", &o.seqs, 1, 1 << 20},         {"--seq-len", &o.seq_len, 1, 1 << 24},
        {"--hidden", &o.hidden, 8, 1 << 16},     {"--heads", &o.heads, 1, 1024},
        {"--experts", &o.experts, 1, 1024},      {"--top-k", &o.top_k, 1, 1024},
        {"--ffn", &o.ffn, 8, 1 << 20},           {"--shared-ffn", &o.shared_ffn, 0, 1 << 20},
    };
    const bool known = name == "--gate" || name == "--router-skew" || name == "--seed" ||
                       std::any_of(std::begin(ints), std::end(ints), [&](const int_opt& x) { return name == x.name; });
    if (!known || !name.starts_with("--"))
      return unexpected(errc::invalid_argument, "unknown option '" + std::string(arg) + "' (see --help)");
    if (!have_value) {
      if (i + 1 >= argc) return unexpected(errc::invalid_argument, std::string(name) + " needs a value (see --help)");
      value = argv[++i];
    }
    if (name == "--gate") {
      if (value == "softmax") o.gate = model::gating::softmax;
      else if (value == "sigmoid") o.gate = model::gating::sigmoid;
      else return unexpected(errc::invalid_argument, "--gate: '" + std::string(value) + "' is not softmax or sigmoid");
    } else if (name == "--router-skew") {
      char* end = nullptr;
      const std::string v(value);
      o.router_skew = std::strtof(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !std::isfinite(o.router_skew) || o.router_skew < 0)
        return unexpected(errc::invalid_argument, "--router-skew: '" + v + "' is not a number >= 0");
    } else if (name == "--seed") {
      auto v = parse_int(name, value, 0, (1ll << 62));
      if (!v) return forward_error(v);
      o.seed = static_cast<std::uint64_t>(*v);
    } else {
      for (const auto& x : ints)
        if (name == x.name) {
          auto v = parse_int(name, value, x.lo, x.hi);
          if (!v) return forward_error(v);
          *x.field = static_cast<int>(*v);
        }
    }
  }
  return o;
}

// What the kernels accept, said before anything runs.
expected<void> validate(const options& o) {
  auto bad = [](const std::string& what) { return unexpected(errc::invalid_argument, what); };
  if (o.hidden % o.heads != 0) return bad("--hidden must be a multiple of --heads");
  const int hd = o.hidden / o.heads;
  if (hd != 64 && hd != 128) return bad("head_dim = hidden / heads must be 64 or 128 (attention kernels), not " + std::to_string(hd));
  if (o.hidden % 8 != 0 || o.ffn % 8 != 0 || o.shared_ffn % 8 != 0)
    return bad("--hidden, --ffn and --shared-ffn must be multiples of 8 (grouped GEMM, vector paths)");
  if (o.top_k > o.experts) return bad("--top-k must not exceed --experts");
  const long long tokens = static_cast<long long>(o.seqs) * o.seq_len;
  if (tokens * o.top_k > (1ll << 30)) return bad("tokens x top-k must stay under 2^30");
  return {};
}

// ---- device helpers -----------------------------------------------------------------------------------

struct stream_holder {
  cudaStream_t s = nullptr;
  ~stream_holder() {
    if (s) cudaStreamDestroy(s);
  }
};

struct event_pair {
  cudaEvent_t a = nullptr, b = nullptr;
  event_pair() = default;
  event_pair(const event_pair&) = delete;
  event_pair& operator=(const event_pair&) = delete;
  ~event_pair() {
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
  }
  expected<void> create() {
    if (auto e = lc::check(cudaEventCreate(&a), "cudaEventCreate"); !e) return e;
    return lc::check(cudaEventCreate(&b), "cudaEventCreate");
  }
  // Milliseconds from a to b, once b has happened.
  expected<float> ms() const {
    if (auto e = lc::check(cudaEventSynchronize(b), "cudaEventSynchronize"); !e) return forward_error(e);
    float t = 0;
    if (auto e = lc::check(cudaEventElapsedTime(&t, a, b), "cudaEventElapsedTime"); !e) return forward_error(e);
    return t;
  }
};

struct device_array {
  void* p = nullptr;
  device_array() = default;
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() {
    if (p) cudaFree(p);
  }
  expected<void> allocate(std::size_t bytes) { return lc::check(cudaMalloc(&p, bytes), "cudaMalloc"); }
  bf16* bf() const { return static_cast<bf16*>(p); }
};

// Random bf16 N(0, sd) over n elements at dst (device): a block of at most 16M values tiled over it.
expected<void> fill_random(bf16* dst, std::size_t n, float sd, std::uint64_t seed) {
  const std::size_t block = std::min<std::size_t>(n, std::size_t{1} << 24);
  std::vector<bf16> h(block);
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.f, sd);
  for (auto& v : h) v = __float2bfloat16(dist(gen));
  for (std::size_t at = 0; at < n; at += block)
    if (auto e = lc::check(cudaMemcpy(dst + at, h.data(), std::min(block, n - at) * sizeof(bf16), cudaMemcpyHostToDevice),
                           "cudaMemcpy (inputs)");
        !e)
      return e;
  return {};
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void report(const char* key, double value, const char* unit, const std::string& text) {
  std::printf("layer %s %.6g\n", key, value);
  std::printf("  %-58s %10.3f %s\n", text.c_str(), value, unit);
  std::fflush(stdout);
}

// ---- FLOPs --------------------------------------------------------------------------------------------

struct flop_count {
  double qkv = 0, attention = 0, out_proj = 0, router = 0, shared = 0, experts = 0;
  double forward() const { return qkv + attention + out_proj + router + shared + experts; }
  double total() const { return 3 * forward(); }  // backward = 2x forward (inputs + weights)
};

flop_count count_flops(const options& o) {
  const double T = double(o.seqs) * o.seq_len, d = o.hidden, S = o.seq_len, hd = double(o.hidden) / o.heads;
  flop_count f;
  f.qkv = 2 * T * d * 3 * d;
  f.attention = 2.0 * o.seqs * o.heads * S * S * hd;  // (QK^T + PV) = 4 S^2 hd per head, causal half
  f.out_proj = 2 * T * d * d;
  f.router = 2 * T * d * o.experts;
  f.shared = 6 * T * d * o.shared_ffn;           // [W1|W3] (2 x fs) and W2
  f.experts = 6 * T * o.top_k * d * o.ffn;       // the same on the T * k routed rows
  return f;
}

// ---- the layer ------------------------------------------------------------------------------------------

constexpr int n_components = 10;
const std::array<const char*, n_components> component_names = {
    "attention_fwd", "dispatch_fwd",    "mlp_fwd",      "combine_fwd",    "combine_bwd",
    "mlp_bwd_input", "dispatch_bwd",    "attention_bwd_input", "mlp_bwd_weight", "attention_bwd_weight"};

// Per-component events (the breakdown pass): the stream is drained before each component starts.
struct component_marks {
  cudaStream_t stream = nullptr;
  std::array<event_pair, n_components> ev;
  expected<void> begin(int i) {
    if (auto e = lc::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (breakdown)"); !e) return e;
    return lc::check(cudaEventRecord(ev[i].a, stream), "cudaEventRecord");
  }
  expected<void> end(int i) { return lc::check(cudaEventRecord(ev[i].b, stream), "cudaEventRecord"); }
};

// What one run leaves for the checks (read after the last run).
struct run_facts {
  std::vector<int> expert_offsets;
  bool finite = true;
  double y_rms = 0, dx_rms = 0;
};

expected<double> rms_of(const lm::dtensor& t, std::size_t n, bool& finite) {
  std::vector<bf16> h(n);
  if (auto e = lc::check(cudaMemcpy(h.data(), t->data(), n * sizeof(bf16), cudaMemcpyDeviceToHost), "reading results"); !e)
    return forward_error(e);
  double sum = 0;
  for (const auto& v : h) {
    const float f = __bfloat162float(v);
    if (!std::isfinite(f)) finite = false;
    sum += double(f) * f;
  }
  return std::sqrt(sum / double(std::max<std::size_t>(n, 1)));
}

// One microbatch of the layer, forward and backward, in the runtime's order. `marks` (or null) brackets
// each component; `facts` (or null) receives what the checks read.
expected<void> run_layer(const lm::layer_call& c, const lm::dtensor& x, const lm::dtensor& dy, component_marks* marks,
                         run_facts* facts) {
  lm::device_layer_state s;
  s.x = x;
  int at = 0;
  auto step = [&](auto&& body) -> expected<void> {
    const int i = at++;
    if (marks)
      if (auto e = marks->begin(i); !e) return e;
    if (auto e = body(); !e)
      return unexpected(e.error().code, std::string(component_names[i]) + ": " + e.error().message);
    if (marks) return marks->end(i);
    return {};
  };
  // A send -> receive pair with the blocks handed straight back (ep = 1).
  auto exchange = [&](auto send, auto receive) {
    return step([&]() -> expected<void> {
      auto blocks = send(c, s);
      if (!blocks) return forward_error(blocks);
      return receive(c, s, std::move(*blocks));
    });
  };
  if (auto e = step([&] { return lm::attention_forward(c, s); }); !e) return e;
  if (auto e = exchange(lm::dispatch_send, lm::dispatch_receive); !e) return e;
  if (auto e = step([&] { return lm::mlp_forward(c, s); }); !e) return e;
  if (auto e = exchange(lm::combine_send, lm::combine_receive); !e) return e;
  s.dy = dy;
  if (auto e = exchange(lm::combine_backward_send, lm::combine_backward_receive); !e) return e;
  if (auto e = step([&] { return lm::mlp_backward_input(c, s); }); !e) return e;
  if (auto e = exchange(lm::dispatch_backward_send, lm::dispatch_backward_receive); !e) return e;
  if (auto e = step([&] { return lm::attention_backward_input(c, s); }); !e) return e;
  if (auto e = step([&] { return lm::mlp_backward_weight(c, s); }); !e) return e;
  if (auto e = step([&] { return lm::attention_backward_weight(c, s); }); !e) return e;
  if (facts) {
    const std::size_t n = static_cast<std::size_t>(c.tokens()) * c.shape->hidden;
    if (auto e = lc::check(cudaStreamSynchronize(c.stream), "running the layer"); !e) return e;
    facts->expert_offsets = s.expert_offsets;
    facts->finite = true;
    auto y = rms_of(s.y, n, facts->finite);
    if (!y) return forward_error(y);
    auto dx = rms_of(s.dx, n, facts->finite);
    if (!dx) return forward_error(dx);
    facts->y_rms = *y;
    facts->dx_rms = *dx;
  }
  return {};
}

// The dense bf16 GEMM rate, as bench/gpu_kernels_bench measures it: cublasLt 8192^3, median of 30 runs.
expected<double> dense_tflops(lc::blas& blas, cudaStream_t stream) {
  const int n = 8192;
  const std::size_t elems = std::size_t(n) * n;
  device_array a, b, c;
  for (auto* d : {&a, &b, &c})
    if (auto e = d->allocate(elems * sizeof(bf16)); !e) return forward_error(e);
  if (auto e = fill_random(a.bf(), elems, 1.f, 101); !e) return forward_error(e);
  if (auto e = fill_random(b.bf(), elems, 1.f, 102); !e) return forward_error(e);
  event_pair ev;
  if (auto e = ev.create(); !e) return forward_error(e);
  std::vector<double> t;
  for (int i = 0; i < 35; ++i) {
    if (auto e = lc::check(cudaEventRecord(ev.a, stream), "cudaEventRecord"); !e) return forward_error(e);
    if (auto e = blas.gemm(false, false, n, n, n, 1.f, a.bf(), n, b.bf(), n, 0.f, c.bf(), n, stream); !e)
      return forward_error(e);
    if (auto e = lc::check(cudaEventRecord(ev.b, stream), "cudaEventRecord"); !e) return forward_error(e);
    auto ms = ev.ms();
    if (!ms) return forward_error(ms);
    if (i >= 5) t.push_back(*ms);  // 5 warm-up runs
  }
  return 2.0 * n * n * double(n) / (median(t) * 1e-3) / 1e12;
}

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

expected<void> run(const options& o) {
  cudaDeviceProp prop{};
  if (auto e = lc::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"); !e) return e;
  std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);

  model::model_shape shape;
  shape.hidden = o.hidden;
  shape.heads = o.heads;
  shape.experts = o.experts;
  shape.top_k = o.top_k;
  shape.expert_ffn = o.ffn;
  shape.shared_ffn = o.shared_ffn;
  shape.seq_len = o.seq_len;
  shape.gate = o.gate;
  shape.router_skew = o.router_skew;
  const int T = o.seqs * o.seq_len;
  std::printf("shape: %d x %d = %d tokens, hidden %d, %d heads (head_dim %d), %d experts top-%d, expert FFN %d, "
              "shared FFN %d, %s gating, router skew %g, bf16, ep 1\n",
              o.seqs, o.seq_len, T, o.hidden, o.heads, shape.head_dim(), o.experts, o.top_k, o.ffn, o.shared_ffn,
              o.gate == model::gating::softmax ? "softmax" : "sigmoid", o.router_skew);
  report("seqs", o.seqs, "", "sequences");
  report("seq_len", o.seq_len, "", "tokens per sequence");
  report("tokens", T, "", "tokens in the microbatch");
  report("hidden", o.hidden, "", "hidden");
  report("experts", o.experts, "", "experts");
  report("top_k", o.top_k, "", "top-k");

  stream_holder stream;
  if (auto e = lc::check(cudaStreamCreateWithFlags(&stream.s, cudaStreamNonBlocking), "cudaStreamCreate"); !e) return e;
  auto pool = lc::device_pool::create(0);
  if (!pool) return forward_error(pool);
  auto blas = lc::blas::create();
  if (!blas) return forward_error(blas);

  double dense = 0;
  if (o.dense) {
    auto d = dense_tflops(**blas, stream.s);
    if (!d) return forward_error(d);
    dense = *d;
    report("dense_8192_tflops", dense, "TFLOP/s", "cublasLt bf16 GEMM 8192^3 (this process)");
  }

  // The weights: the host param_set (the master copy the runtime keeps), uploaded as the runtime does.
  const auto slots = model::slot_map::identity(o.experts, 1);
  auto t0 = clock_type::now();
  std::unique_ptr<model::param_set> host =
      std::make_unique<model::param_set>(shape, std::vector<std::vector<int>>{slots.local_experts(0)}, 0, 1, false, false, o.seed);
  std::printf("host param_set: %.1f M parameters, %.1f s\n", double(host->bytes()) / 20 / 1e6, seconds_since(t0));
  t0 = clock_type::now();
  auto params = lm::device_params::create(*pool, shape, *host, {slots}, stream.s);
  if (!params) return forward_error(params);
  host.reset();  // ~20 bytes a parameter on the host; the device copy is all the benchmark needs
  std::printf("device_params::create: %.2f GB on the device, %.1f s\n", params->bytes() / 1e9, seconds_since(t0));

  const std::size_t act = static_cast<std::size_t>(T) * o.hidden;
  auto x = lm::allocate(*pool, act * sizeof(bf16), stream.s);
  if (!x) return forward_error(x);
  auto dy = lm::allocate(*pool, act * sizeof(bf16), stream.s);
  if (!dy) return forward_error(dy);
  auto load = lm::allocate(*pool, static_cast<std::size_t>(o.experts) * sizeof(float), stream.s);
  if (!load) return forward_error(load);
  if (auto e = lc::check(cudaStreamSynchronize(stream.s), "allocating inputs"); !e) return e;
  if (auto e = fill_random(lm::ptr<bf16>(*x), act, 1.f, o.seed * 7 + 1); !e) return e;
  if (auto e = fill_random(lm::ptr<bf16>(*dy), act, 1.f, o.seed * 7 + 2); !e) return e;
  if (auto e = lc::check(cudaMemsetAsync(lm::ptr<float>(*load), 0, o.experts * sizeof(float), stream.s), "cudaMemset"); !e)
    return e;

  lm::layer_call c;
  c.shape = &shape;
  c.ep = 1;
  c.ep_index = 0;
  c.seqs = o.seqs;
  c.first_token = 0;
  c.token_seed = o.seed;
  c.params = &params->layer(0);
  c.pool = &*pool;
  c.gemm = blas->get();
  c.stream = stream.s;
  c.load = lm::ptr<float>(*load);
  auto readback = lm::host_readback::create();  // as the runtime's dispatch component has
  if (!readback) return forward_error(readback);
  c.readback = &*readback;

  // Warm-up (the pool grows to its working size, cublasLt picks its algorithms), then the timed runs.
  for (int i = 0; i < o.warmup; ++i)
    if (auto e = run_layer(c, *x, *dy, nullptr, nullptr); !e) return e;
  if (auto e = lc::check(cudaStreamSynchronize(stream.s), "warm-up"); !e) return e;
  event_pair ev;
  if (auto e = ev.create(); !e) return e;
  std::vector<double> ms, wall;
  for (int i = 0; i < o.iters; ++i) {
    const auto w0 = clock_type::now();
    if (auto e = lc::check(cudaEventRecord(ev.a, stream.s), "cudaEventRecord"); !e) return e;
    if (auto e = run_layer(c, *x, *dy, nullptr, nullptr); !e) return e;
    if (auto e = lc::check(cudaEventRecord(ev.b, stream.s), "cudaEventRecord"); !e) return e;
    auto t = ev.ms();
    if (!t) return forward_error(t);
    ms.push_back(*t);
    wall.push_back(seconds_since(w0) * 1e3);
  }
  const double t_med = median(ms);
  const auto [t_min, t_max] = std::minmax_element(ms.begin(), ms.end());
  const flop_count f = count_flops(o);
  const double tflops = f.total() / (t_med * 1e-3) / 1e12;
  std::printf("\nforward + backward of one layer (%d runs after %d warm-up):\n", o.iters, o.warmup);
  report("fwd_bwd_ms", t_med, "ms", "median (CUDA events)");
  report("fwd_bwd_min_ms", *t_min, "ms", "  fastest run");
  report("fwd_bwd_max_ms", *t_max, "ms", "  slowest run");
  report("fwd_bwd_wall_ms", median(wall), "ms", "  host wall time a run (median)");
  report("gflop", f.total() / 1e9, "GFLOP", "useful FLOPs (forward 1x + backward 2x)");
  std::printf("    forward GFLOP: qkv %.1f, attention (causal) %.1f, out proj %.1f, router %.1f, shared %.1f, "
              "experts (T*k = %d rows) %.1f\n",
              f.qkv / 1e9, f.attention / 1e9, f.out_proj / 1e9, f.router / 1e9, f.shared / 1e9, T * o.top_k,
              f.experts / 1e9);
  report("tflops", tflops, "TFLOP/s", "useful rate");
  if (o.dense) report("fraction_of_dense", tflops / dense, "", "useful rate / dense GEMM rate");
  report("pool_gib", pool->reserved_bytes() / double(1ull << 30), "GiB", "device pool reserved (activations, weights)");

  // A last run, checked: every token copy routed, finite outputs.
  run_facts facts;
  if (auto e = run_layer(c, *x, *dy, nullptr, &facts); !e) return e;
  const auto& off = facts.expert_offsets;
  if (static_cast<int>(off.size()) != o.experts + 1 || off.back() != T * o.top_k)
    return unexpected(errc::internal, "the layer routed " + std::to_string(off.empty() ? 0 : off.back()) + " token copies, not " +
                                          std::to_string(T * o.top_k));
  int max_rows = 0, min_rows = T * o.top_k;
  for (int e = 0; e < o.experts; ++e) {
    max_rows = std::max(max_rows, off[e + 1] - off[e]);
    min_rows = std::min(min_rows, off[e + 1] - off[e]);
  }
  report("expert_rows_max", max_rows, "rows", "rows of the busiest expert (last run)");
  report("expert_rows_min", min_rows, "rows", "rows of the idlest expert");
  report("expert_imbalance", max_rows / (double(T) * o.top_k / o.experts), "", "busiest / mean");
  report("output_finite", facts.finite ? 1 : 0, "", "y and dx finite (1 = yes)");
  std::printf("  rms(y) %.4g, rms(dx) %.4g\n", facts.y_rms, facts.dx_rms);
  if (!facts.finite) return unexpected(errc::internal, "the layer produced NaN or infinity in y or dx");

  if (o.breakdown_iters > 0) {
    component_marks marks;
    marks.stream = stream.s;
    for (auto& p : marks.ev)
      if (auto e = p.create(); !e) return e;
    std::vector<std::vector<double>> per(n_components);
    for (int i = 0; i < o.breakdown_iters; ++i) {
      if (auto e = run_layer(c, *x, *dy, &marks, nullptr); !e) return e;
      for (int k = 0; k < n_components; ++k) {
        auto t = marks.ev[k].ms();
        if (!t) return forward_error(t);
        per[k].push_back(*t);
      }
    }
    std::printf("\neach component alone (stream drained before it; median of %d):\n", o.breakdown_iters);
    double sum = 0;
    std::array<double, n_components> med{};
    for (int k = 0; k < n_components; ++k) sum += med[k] = median(per[k]);
    for (int k = 0; k < n_components; ++k) {
      char text[96];
      std::snprintf(text, sizeof text, "%s (%.1f%%)", component_names[k], 100 * med[k] / sum);
      report((std::string("comp_") + component_names[k] + "_ms").c_str(), med[k], "ms", text);
    }
    report("comp_sum_ms", sum, "ms", "sum of the components");
  }
  return lc::check(cudaStreamSynchronize(stream.s), "finishing");
}

}  // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  if (!o) {
    std::fprintf(stderr, "moe_layer_bench: %s\n", o.error().message.c_str());
    return 2;
  }
  if (o->help) {
    std::fputs(usage, stdout);
    return 0;
  }
  if (auto e = validate(*o); !e) {
    std::fprintf(stderr, "moe_layer_bench: %s\n", e.error().message.c_str());
    return 2;
  }
  if (auto e = run(*o); !e) {
    std::fprintf(stderr, "moe_layer_bench: FAILED: %s\n", e.error().to_string().c_str());
    std::printf("layer failed 1\n");
    return 1;
  }
  return 0;
}
