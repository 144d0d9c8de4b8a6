#include "actors/transport_collectives.hpp"

#include <algorithm>
#include <mutex>
#include <string>

namespace loom::actors {

namespace {

// What the receives of one all-to-all share; they may complete on different threads.
struct gather {
  std::mutex mutex;
  std::vector<payload> got;
  int missing = 0;
  bool failed = false;
  all_to_all_callback done;
};

}  // namespace

void all_to_all_by_messages(const transport_ops& ops, void* state, int self, const std::vector<int>& group,
                            std::uint64_t tag, std::vector<payload> out, all_to_all_callback done) {
  const auto me = std::find(group.begin(), group.end(), self);
  if (me == group.end() || out.size() != group.size()) {
    done(unexpected(errc::internal, "all-to-all: rank " + std::to_string(self) + " with " + std::to_string(out.size()) +
                                        " payloads for a group of " + std::to_string(group.size()) +
                                        (me == group.end() ? " that does not hold it" : "")));
    return;
  }
  const std::size_t mine = static_cast<std::size_t>(me - group.begin());
  auto g = std::make_shared<gather>();
  g->got.resize(group.size());
  g->got[mine] = std::move(out[mine]);
  g->missing = static_cast<int>(group.size()) - 1;
  g->done = std::move(done);
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i == mine) continue;
    if (auto sent = ops.send(state, self, group[i], tag, std::move(out[i])); !sent) {
      g->failed = true;
      g->done(unexpected(sent.error()));
      return;
    }
  }
  if (g->missing == 0) {
    g->done(std::move(g->got));
    return;
  }
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i == mine) continue;
    ops.receive(state, self, group[i], tag, [g, i](expected<payload> p) {
      all_to_all_callback call;
      expected<std::vector<payload>> result{std::vector<payload>{}};
      {
        std::lock_guard<std::mutex> lock(g->mutex);
        if (g->failed) return;
        if (!p) {
          g->failed = true;
          result = unexpected(p.error());
        } else {
          g->got[i] = std::move(*p);
          if (--g->missing > 0) return;
          result = std::move(g->got);
        }
        call = std::move(g->done);
      }
      call(std::move(result));  // outside the lock: it may start the next exchange
    });
  }
}

void barrier_by_messages(const transport_ops& ops, void* state, int self, const std::vector<int>& group,
                         std::uint64_t tag, barrier_callback done) {
  all_to_all_by_messages(ops, state, self, group, tag, std::vector<payload>(group.size()),
                         [done = std::move(done)](expected<std::vector<payload>> r) {
                           if (r) done({});
                           else done(unexpected(r.error()));
                         });
}

}  // namespace loom::actors
