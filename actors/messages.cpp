#include "actors/messages.hpp"

namespace loom::actors {

void register_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<op_request>("loom::op_request");
  cfg.add_message_type<op_result>("loom::op_result");
  cfg.add_message_type<op_timing>("loom::op_timing");
  cfg.add_message_type<std::vector<op_timing>>("std::vector<loom::op_timing>");
  cfg.add_message_type<step_report>("loom::step_report");
  cfg.add_message_type<sync_report>("loom::sync_report");
  cfg.add_message_type<apply_request>("loom::apply_request");
  cfg.add_message_type<tensor_dump>("loom::tensor_dump");
  cfg.add_message_type<rank_status>("loom::rank_status");
  cfg.add_message_type<migrate_request>("loom::migrate_request");
  cfg.add_message_type<migrate_report>("loom::migrate_report");
  cfg.add_message_type<std::vector<std::int32_t>>("std::vector<int32_t>");
  cfg.add_message_type<std::vector<std::vector<std::int32_t>>>("std::vector<std::vector<int32_t>>");
  cfg.add_message_type<payload>("loom::payload");
  cfg.add_message_type<std::vector<payload>>("std::vector<loom::payload>");
  cfg.add_message_type<std::vector<double>>("std::vector<double>");
  cfg.add_message_type<std::vector<std::string>>("std::vector<std::string>");
}

}  // namespace loom::actors
