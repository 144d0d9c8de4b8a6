#include "support/diagnostic.hpp"

#include <algorithm>

namespace loom {

diagnostic& diagnostic_list::error(source_loc loc, std::string message) {
  ++errors_;
  if (errors_ > max_errors) {  // counted, not kept: the caller stops soon after full()
    overflow_ = {severity::error, loc, std::move(message), {}};
    return overflow_;
  }
  items_.push_back({severity::error, loc, std::move(message), {}});
  return items_.back();
}

diagnostic& diagnostic_list::limit_error(source_loc loc, std::string message) {
  limit_ = true;
  diagnostic& d = error(loc, std::move(message));
  d.limit = true;
  return d;
}

diagnostic& diagnostic_list::warning(source_loc loc, std::string message) {
  items_.push_back({severity::warning, loc, std::move(message), {}});
  return items_.back();
}

namespace {

const char* label(severity s) {
  switch (s) {
    case severity::error: return "error";
    case severity::warning: return "warning";
    case severity::note: return "note";
  }
  return "error";
}

// Printable form of a source line: control and non-ASCII bytes become '?' so a binary file cannot
// garble the terminal; a long line is cut to a window around the column.
void excerpt(std::string_view line, std::uint32_t col, std::string& shown, std::size_t& caret) {
  constexpr std::size_t window = 100;
  std::size_t c = col == 0 ? 0 : col - 1;
  std::size_t begin = c > window / 2 ? c - window / 2 : 0;
  if (begin > line.size()) begin = line.size();
  std::size_t end = std::min(line.size(), begin + window);
  shown.clear();
  if (begin > 0) shown += "...";
  for (std::size_t i = begin; i < end; ++i) {
    unsigned char ch = static_cast<unsigned char>(line[i]);
    shown += (ch == '\t' || (ch >= 0x20 && ch < 0x7f)) ? static_cast<char>(ch) : '?';
  }
  if (end < line.size()) shown += "...";
  caret = (begin > 0 ? 3 : 0) + (c >= begin ? c - begin : 0);
}

void render_one(const source_set& sources, const diagnostic& d, std::string& out) {
  const source_file* file = d.loc.file < sources.size() ? &sources.file(d.loc.file) : nullptr;
  if (file) {
    out += file->path;
    if (d.loc.known()) out += ":" + std::to_string(d.loc.line) + ":" + std::to_string(d.loc.col);
    out += ": ";
  }
  out += label(d.level);
  out += ": ";
  out += d.message;
  out += '\n';
  if (file && d.loc.known()) {
    std::string shown;
    std::size_t caret = 0;
    excerpt(file->line_text(d.loc.line), d.loc.col, shown, caret);
    std::string number = std::to_string(d.loc.line);
    out += " " + number + " | " + shown + "\n";
    out += " " + std::string(number.size(), ' ') + " | ";
    for (std::size_t i = 0; i < caret; ++i) out += (i < shown.size() && shown[i] == '\t') ? '\t' : ' ';
    out += "^\n";
  }
  for (const auto& n : d.notes) render_one(sources, n, out);
}

}  // namespace

std::string render(const source_set& sources, const diagnostic& d) {
  std::string out;
  render_one(sources, d, out);
  return out;
}

std::string render(const source_set& sources, const diagnostic_list& list) {
  std::string out;
  for (const auto& d : list.items()) render_one(sources, d, out);
  if (list.error_count() > 1) out += std::to_string(list.error_count()) + " errors\n";
  if (list.full()) out += "(stopped after " + std::to_string(diagnostic_list::max_errors) + " errors)\n";
  return out;
}

loom::error to_error(const source_set& sources, const diagnostic_list& list, errc code) {
  std::string text = render(sources, list);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return {code, std::move(text)};
}

}  // namespace loom
