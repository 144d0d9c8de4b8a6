#include "runtime/daemon/protocol.hpp"

namespace loom::daemon {

bool is_final_status(const std::string& s) {
  return s == "done" || s == "failed" || s == "cancelled" || s == "interrupted";
}

void register_protocol_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<bundle_file>("loom::bundle_file");
  cfg.add_message_type<std::vector<bundle_file>>("std::vector<loom::bundle_file>");
  cfg.add_message_type<submission>("loom::submission");
  cfg.add_message_type<experiment_info>("loom::experiment_info");
  cfg.add_message_type<std::vector<experiment_info>>("std::vector<loom::experiment_info>");
  cfg.add_message_type<submit_reply>("loom::submit_reply");
  cfg.add_message_type<status_reply>("loom::status_reply");
  cfg.add_message_type<logs_reply>("loom::logs_reply");
  cfg.add_message_type<basic_reply>("loom::basic_reply");
  cfg.add_message_type<results_reply>("loom::results_reply");
  cfg.add_message_type<std::vector<std::string>>("std::vector<std::string>");
  cfg.add_message_type<host_info>("loom::host_info");
  cfg.add_message_type<std::vector<host_info>>("std::vector<loom::host_info>");
  cfg.add_message_type<workers_request>("loom::workers_request");
  cfg.add_message_type<workers_reply>("loom::workers_reply");
  cfg.add_message_type<worker_exit>("loom::worker_exit");
  cfg.add_message_type<host_join_request>("loom::host_join_request");
  cfg.add_message_type<host_join_reply>("loom::host_join_reply");
  cfg.add_message_type<hosts_reply>("loom::hosts_reply");
  cfg.add_message_type<host_actor>("loom::host_actor");
}

}  // namespace loom::daemon
