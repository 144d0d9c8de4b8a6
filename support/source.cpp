#include "support/source.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

namespace loom {

std::string_view source_file::line_text(std::uint32_t line) const {
  if (line == 0 || line > line_starts.size()) return {};
  std::size_t begin = line_starts[line - 1];
  std::size_t end = line < line_starts.size() ? line_starts[line] : text.size();
  while (end > begin && (text[end - 1] == '\n' || text[end - 1] == '\r')) --end;
  return std::string_view(text).substr(begin, end - begin);
}

source_loc source_file::loc_of(std::uint32_t file_id, std::size_t offset) const {
  auto it = std::upper_bound(line_starts.begin(), line_starts.end(), static_cast<std::uint32_t>(offset));
  auto line = static_cast<std::uint32_t>(it - line_starts.begin());
  if (line == 0) line = 1;
  return {file_id, line, static_cast<std::uint32_t>(offset - line_starts[line - 1] + 1)};
}

std::uint32_t source_set::add(std::string path, std::string text) {
  auto f = std::make_unique<source_file>();
  f->path = std::move(path);
  f->text = std::move(text);
  f->line_starts.push_back(0);
  for (std::size_t i = 0; i < f->text.size(); ++i)
    if (f->text[i] == '\n') f->line_starts.push_back(static_cast<std::uint32_t>(i + 1));
  files_.push_back(std::move(f));
  return static_cast<std::uint32_t>(files_.size() - 1);
}

expected<std::uint32_t> source_set::load(const std::string& path, std::size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return unexpected(errc::io_error, path + ": cannot open: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return unexpected(errc::io_error, path + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode)) return unexpected(errc::io_error, path + ": is not a regular file");
  if (static_cast<std::size_t>(st.st_size) > max_bytes)
    return unexpected(errc::limit_exceeded, path + ": file is " + std::to_string(st.st_size) +
                                                " bytes, over the limit of " + std::to_string(max_bytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) return unexpected(errc::io_error, path + ": cannot open: " + std::strerror(errno));
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return add(path, std::move(text));
}

}  // namespace loom
