#include "runtime/cluster/protocol.hpp"

#include "runtime/exec/run_plan.hpp"

namespace loom::cluster {

void register_cluster_types(caf::actor_system_config& cfg) {
  exec::register_runtime_types(cfg);
  cfg.add_message_type<join_request>("loom::join_request");
  cfg.add_message_type<join_reply>("loom::join_reply");
  cfg.add_message_type<ready_request>("loom::ready_request");
  cfg.add_message_type<ready_reply>("loom::ready_reply");
  cfg.add_message_type<std::vector<ready_request>>("std::vector<loom::ready_request>");
  cfg.add_message_type<daemon::bundle_file>("loom::bundle_file");
  cfg.add_message_type<std::vector<daemon::bundle_file>>("std::vector<loom::bundle_file>");
  cfg.add_message_type<daemon::submission>("loom::submission");
  cfg.add_message_type<std::vector<caf::actor>>("std::vector<caf::actor>");
  cfg.add_message_type<actors::rank_actor>("loom::rank_actor");
}

}  // namespace loom::cluster
