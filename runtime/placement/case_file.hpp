// Expert-load case files (the shared cases' eplb/*.json format):
//   {"num_replicas": 16, "num_groups": 4, "num_nodes": 2, "num_gpus": 8,
//    "load": [[...per expert...], ...per layer...],
//    "anchor_phy2log": [[...per slot...], ...] (optional), "anchor_imbalance": [...per layer...] (optional)}
// load_case_file reads and checks one; errors name the file and the offending key, layer or position.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/placement/planner.hpp"
#include "support/expected.hpp"

namespace loom::placement {

struct load_case {
  std::string origin;  // the file it came from (for messages)
  topology topo;
  std::vector<std::vector<double>> load;                 // load[layer][expert], >= 1 layer, same width
  std::vector<std::vector<std::size_t>> anchor_phy2log;  // empty when the file has none
  std::vector<double> anchor_imbalance;                  // empty when the file has none

  std::size_t num_experts() const { return load.empty() ? 0 : load.front().size(); }
};

// Parses `text`; `origin` names it in error messages (errc::parse_error for malformed JSON or a wrong
// shape, errc::invalid_argument for a topology that cannot be planned).
expected<load_case> parse_load_case(std::string_view text, std::string origin);

// Reads and parses a file (errc::io_error when it cannot be read).
expected<load_case> load_case_file(const std::filesystem::path& path);

}  // namespace loom::placement
