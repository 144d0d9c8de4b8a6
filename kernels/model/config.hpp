// The shape of the model a stage runs, as the kernels see it (no file formats, no schedule).
#pragma once

namespace loom::model {

enum class gating { softmax, sigmoid };

struct model_shape {
  int hidden = 64;
  int heads = 4;
  int experts = 8;
  int top_k = 2;
  int expert_ffn = 64;
  int shared_ffn = 64;  // 0: no shared expert
  int vocab = 256;
  int seq_len = 32;
  gating gate = gating::softmax;
  float norm_eps = 1e-5f;
  float init_scale = 0.02f;
  int head_dim() const { return hidden / heads; }
};

// Where a stage's tokens and experts are: this rank's share of an expert-parallel group.
struct ep_layout {
  int ep = 1;    // ranks in the group
  int index = 0; // this rank
  int experts_per_rank(const model_shape& m) const { return m.experts / ep; }
  int first_expert(const model_shape& m) const { return index * experts_per_rank(m); }
  int owner_of(const model_shape& m, int expert) const { return expert / experts_per_rank(m); }
};

}  // namespace loom::model
