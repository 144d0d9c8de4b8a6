// Source files and positions, shared by the schedule language, the action-text reader and the
// experiment loader, so that every located error prints the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "support/expected.hpp"

namespace loom {

// A position in a loaded source: file id, 1-based line and byte column. line 0 means "no position".
struct source_loc {
  std::uint32_t file = 0;
  std::uint32_t line = 0;
  std::uint32_t col = 0;
  bool known() const { return line != 0; }
};

struct source_file {
  std::string path;  // as the user named it
  std::string text;
  std::vector<std::uint32_t> line_starts;  // byte offset of each line

  std::string_view line_text(std::uint32_t line) const;  // without the newline
  source_loc loc_of(std::uint32_t file_id, std::size_t offset) const;
};

// Owns every file read while compiling one schedule (the main file and its imports).
class source_set {
 public:
  // Reads a file, refusing directories, unreadable paths and files over `max_bytes`.
  expected<std::uint32_t> load(const std::string& path, std::size_t max_bytes);
  // Adds text that did not come from disk (tests, the daemon's submitted contents).
  std::uint32_t add(std::string path, std::string text);

  const source_file& file(std::uint32_t id) const { return *files_.at(id); }
  std::size_t size() const { return files_.size(); }

 private:
  std::vector<std::unique_ptr<source_file>> files_;
};

}  // namespace loom
