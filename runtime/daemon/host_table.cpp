#include "runtime/daemon/host_table.hpp"

#include <algorithm>

namespace loom::daemon {

std::uint64_t host_table::add(host_info info, host_actor agent) {
  const auto addr = agent.address();
  auto same = [&](const joined_host& h) {
    return h.agent.address() == addr || (h.info.name == info.name && h.info.address == info.address);
  };
  hosts_.erase(std::remove_if(hosts_.begin(), hosts_.end(), same), hosts_.end());
  joined_host h;
  h.id = next_++;
  h.info = std::move(info);
  h.info.used = 0;
  h.agent = std::move(agent);
  hosts_.push_back(std::move(h));
  return hosts_.back().id;
}

std::string host_table::remove(const caf::actor_addr& agent) {
  for (auto it = hosts_.begin(); it != hosts_.end(); ++it)
    if (it->agent.address() == agent) {
      std::string name = it->info.name;
      hosts_.erase(it);
      return name;
    }
  return {};
}

const joined_host* host_table::find(std::uint64_t id) const {
  for (const auto& h : hosts_)
    if (h.id == id) return &h;
  return nullptr;
}

joined_host* host_table::find(std::uint64_t id) {
  for (auto& h : hosts_)
    if (h.id == id) return &h;
  return nullptr;
}

expected<std::vector<int>> place_ranks(int world, int want_hosts, const std::vector<host_capacity>& hosts) {
  if (world <= 0) return unexpected(errc::invalid_argument, "a run needs at least one process");
  if (hosts.empty() || hosts[0].free <= 0)
    return unexpected(errc::unavailable, "this daemon has no free slot for rank 0 (loomd --slots N gives it more)");
  // The hosts to use: the head, then joined hosts with a free slot, in order.
  std::vector<int> use = {0};
  const int cap = want_hosts > 0 ? want_hosts : std::min<int>(world, static_cast<int>(hosts.size()));
  for (int i = 1; i < static_cast<int>(hosts.size()) && static_cast<int>(use.size()) < cap; ++i)
    if (hosts[static_cast<std::size_t>(i)].free > 0) use.push_back(i);
  auto listing = [&] {
    std::string s;
    for (std::size_t i = 0; i < hosts.size(); ++i)
      s += (i ? ", " : "") + hosts[i].name + (i == 0 ? " (this daemon)" : "") + ": " + std::to_string(hosts[i].free) + " free";
    return s;
  };
  if (want_hosts > 0 && static_cast<int>(use.size()) < want_hosts)
    return unexpected(errc::unavailable, "the run asks for " + std::to_string(want_hosts) + " hosts but only " +
                                             std::to_string(use.size()) + " have a free slot (" + listing() +
                                             "); start more with loomd --join, or ask for fewer with --hosts");
  std::vector<int> free;
  for (int h : use) free.push_back(hosts[static_cast<std::size_t>(h)].free);
  std::vector<int> out(static_cast<std::size_t>(world), -1);
  std::size_t next = 0;  // round-robin position among `use`
  for (int r = 0; r < world; ++r) {
    std::size_t tried = 0;
    while (tried < use.size() && free[next] == 0) next = (next + 1) % use.size(), ++tried;
    if (tried == use.size())
      return unexpected(errc::unavailable, std::to_string(world) + " processes do not fit in the free slots of " +
                                               std::to_string(use.size()) + (use.size() == 1 ? " host" : " hosts") + " (" +
                                               listing() + "); loomd --slots N raises a host's");
    out[static_cast<std::size_t>(r)] = use[next];
    --free[next];
    next = (next + 1) % use.size();
  }
  return out;
}

}  // namespace loom::daemon
