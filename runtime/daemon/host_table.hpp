// The head daemon's list of the daemons that joined it (loomd --join), and where the ranks of a
// multi-process run go. Host 0 is always the head itself (rank 0, the rendezvous, runs there); the
// others are joined daemons in join order. A host that leaves is dropped from the list; runs that
// used it find out through their own control plane.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/daemon/host_protocol.hpp"
#include "support/expected.hpp"

namespace loom::daemon {

struct joined_host {
  std::uint64_t id = 0;   // this table's number for it (never reused)
  host_info info;
  host_actor agent;
};

class host_table {
 public:
  // Adds a host, or replaces the entry of the same agent or the same name and address (a daemon
  // that joins again after its connection dropped). Returns its id.
  std::uint64_t add(host_info info, host_actor agent);
  // Drops the host whose agent is `agent`; its name, or "" when none was.
  std::string remove(const caf::actor_addr& agent);
  const joined_host* find(std::uint64_t id) const;
  joined_host* find(std::uint64_t id);
  const std::vector<joined_host>& hosts() const { return hosts_; }

 private:
  std::vector<joined_host> hosts_;
  std::uint64_t next_ = 1;
};

struct host_capacity {
  std::string name;
  int free = 0;           // slots not taken
};

// Spreads ranks 0..world-1 round-robin over `want_hosts` hosts (0: as many as there are, at most
// world), taken in order from `hosts` (hosts[0] is the head, which always runs rank 0), skipping
// hosts without a free slot. Returns the index in `hosts` of each rank's host, or why they do not fit.
expected<std::vector<int>> place_ranks(int world, int want_hosts, const std::vector<host_capacity>& hosts);

}  // namespace loom::daemon
