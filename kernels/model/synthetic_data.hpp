// Seeded synthetic training data: sequences that follow a simple rule most of the time (next token =
// 5 * token + 3 mod vocab, with 10% random tokens), so the loss has something to learn and falls.
// A token depends only on (seed, step, global microbatch, sequence, position): every schedule and
// every split of a microbatch over expert-parallel ranks sees the same data.
#pragma once

#include <cstdint>
#include <vector>

namespace loom::model {

struct token_batch {
  std::vector<int> ids;      // [seqs * seq_len]
  std::vector<int> targets;  // next token of each position
};

// Sequences [first_seq, first_seq + seqs) of microbatch `microbatch` in step `step`.
token_batch synthetic_tokens(std::uint64_t seed, int step, int microbatch, int first_seq, int seqs, int seq_len, int vocab);

// A seed naming (step, microbatch, logical layer), for per-token noise that every split agrees on.
std::uint64_t token_seed(std::uint64_t seed, int step, int microbatch, int layer);

}  // namespace loom::model
