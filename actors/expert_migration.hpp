// Moving experts between the ranks of an expert-parallel group when their placement is re-planned:
// each rank works out, from the old and the new slot maps alone, which slots it fills from its own
// copies, which it receives and from whom, and which of its copies it sends; every rank of the group
// reaches the same plan, so no negotiation is needed. Weights move with their AdamW moments.
#pragma once

#include <vector>

#include "actors/messages.hpp"
#include "actors/rank_context.hpp"

namespace loom::actors {

struct migration {
  struct incoming {
    int chunk = 0, layer = 0, slot = 0, expert = 0;
    int from = 0;  // global rank
    tag net_tag;
  };
  struct outgoing {
    int to = 0;  // global rank
    tag net_tag;
    payload data;
  };
  struct local_fill {
    int chunk = 0, layer = 0, slot = 0, expert = 0;
    std::vector<std::vector<float>> state;
  };
  std::vector<incoming> receive;
  std::vector<outgoing> send;
  std::vector<local_fill> keep;
  // The new slot maps, installed once every slot is filled.
  std::vector<std::tuple<int, int, model::slot_map>> maps;  // (chunk, layer, map)
};

// What this rank does for `req` (layers it does not hold are ignored).
migration plan_migration(const rank_context& ctx, const migrate_request& req);

// Installs a received expert into its slot.
expected<void> fill_slot(rank_context& ctx, const migration::incoming& in, payload data);

// Installs the kept copies and the new slot maps; call after every receive has been filled.
void finish_migration(rank_context& ctx, migration& m);

}  // namespace loom::actors
