#include "kernels/model/synthetic_data.hpp"

namespace loom::model {

namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::uint64_t token_seed(std::uint64_t seed, int step, int microbatch, int layer) {
  return mix(seed ^ mix(0x70c0 + static_cast<std::uint64_t>(step)) ^ mix(0x3b00000 + static_cast<std::uint64_t>(microbatch)) ^
             mix(0x1a7e400000000ull + static_cast<std::uint64_t>(layer)));
}

token_batch synthetic_tokens(std::uint64_t seed, int step, int microbatch, int first_seq, int seqs, int seq_len, int vocab) {
  token_batch b;
  b.ids.resize(static_cast<std::size_t>(seqs) * seq_len);
  b.targets.resize(b.ids.size());
  for (int s = 0; s < seqs; ++s) {
    std::uint64_t state = mix(seed ^ mix(static_cast<std::uint64_t>(step) * 1000003u + static_cast<std::uint64_t>(microbatch)) ^
                              mix(0x5151u + static_cast<std::uint64_t>(first_seq + s)));
    int token = static_cast<int>(mix(state) % static_cast<std::uint64_t>(vocab));
    for (int t = 0; t <= seq_len; ++t) {
      state = mix(state);
      int next = (state % 10 == 0) ? static_cast<int>((state >> 8) % static_cast<std::uint64_t>(vocab))
                                   : static_cast<int>((5LL * token + 3) % vocab);
      if (t < seq_len) b.ids[static_cast<std::size_t>(s) * seq_len + t] = token;
      if (t > 0) b.targets[static_cast<std::size_t>(s) * seq_len + t - 1] = token;
      token = next;
    }
  }
  return b;
}

}  // namespace loom::model
