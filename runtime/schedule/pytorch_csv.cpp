#include "runtime/schedule/pytorch_csv.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>

#include "runtime/schedule/limits.hpp"

namespace loom::schedule {

namespace {

// Global index of stage 0 of each pipeline: pipelines numbered one after the other.
std::vector<int> stage_offsets(const std::vector<pipeline>& pipelines) {
  std::vector<int> offsets;
  int next = 0;
  for (const auto& p : pipelines) {
    offsets.push_back(next);
    next += p.stages;
  }
  return offsets;
}

std::string format_step(const schedule& s, const std::vector<int>& offsets, int rank, const step& st) {
  const stage_ref ref = s.placement[rank][st.chunk];
  return std::to_string(offsets[ref.pipeline] + ref.stage) + to_char(st.kind) + std::to_string(st.microbatch);
}

}  // namespace

std::string format_pytorch_csv(const schedule& s) {
  const auto offsets = stage_offsets(s.pipelines);
  std::string out;
  for (int r = 0; r < s.ranks(); ++r) {
    bool first = true;
    for (const auto& a : s.programs[r]) {
      if (!first) out += ',';
      first = false;
      if (a.second)
        out += '(' + format_step(s, offsets, r, a.first) + ';' + format_step(s, offsets, r, *a.second) +
               ")OVERLAP_F_B";
      else
        out += format_step(s, offsets, r, a.first);
    }
    out += '\n';
  }
  return out;
}

namespace {

// One action of the file, stages still global.
struct csv_step {
  int stage = 0;
  phase kind = phase::F;
  int microbatch = 0;
};

struct csv_cell {
  csv_step first;
  std::optional<csv_step> second;
  source_loc where;
};

struct csv_row {
  source_loc where;
  std::vector<csv_cell> cells;
};

constexpr int max_global_stage = limits::max_ranks * limits::max_chunks_per_rank;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// The cell as it may be quoted in a message: printable, not too long.
std::string shown(std::string_view cell) {
  std::string out;
  for (char c : cell.substr(0, 40)) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (cell.size() > 40) out += "...";
  return out;
}

enum class number_read { ok, missing, too_large };

// A decimal number no larger than `max`; advances `pos` past its digits.
number_read read_number(std::string_view text, std::size_t& pos, int max, int& out) {
  if (pos >= text.size() || !std::isdigit(static_cast<unsigned char>(text[pos]))) return number_read::missing;
  long long v = 0;
  bool too_large = false;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    if (!too_large) v = v * 10 + (text[pos] - '0');
    too_large = too_large || v > max;
    ++pos;
  }
  out = static_cast<int>(std::min<long long>(v, max));
  return too_large ? number_read::too_large : number_read::ok;
}

// The action kinds of PyTorch's schedule IR that are not computation.
bool is_comm_kind(std::string_view rest) {
  for (std::string_view k : {"UNSHARD", "RESHARD", "REDUCE_GRAD", "SEND_F", "RECV_F", "SEND_B", "RECV_B"})
    if (rest.substr(0, k.size()) == k) return true;
  return false;
}

enum class cell_kind { compute, comm };

// "3F12": stage, kind, microbatch, nothing else. On failure `why` says what is wrong.
bool parse_csv_step(std::string_view text, csv_step& out, cell_kind& kind, std::string& why) {
  std::size_t pos = 0;
  kind = cell_kind::compute;
  switch (read_number(text, pos, max_global_stage, out.stage)) {
    case number_read::ok: break;
    case number_read::missing: why = "expected a stage index first, as in 0F1"; return false;
    case number_read::too_large: why = "the stage index is over the limit of " + std::to_string(max_global_stage); return false;
  }
  if (is_comm_kind(text.substr(pos))) {
    kind = cell_kind::comm;
    return true;
  }
  switch (pos < text.size() ? text[pos] : '\0') {
    case 'F': out.kind = phase::F; break;
    case 'B': out.kind = phase::B; break;
    case 'I': out.kind = phase::I; break;
    case 'W': out.kind = phase::W; break;
    default: why = "expected F, B, I or W after the stage index"; return false;
  }
  ++pos;
  switch (read_number(text, pos, limits::max_microbatches - 1, out.microbatch)) {
    case number_read::ok: break;
    case number_read::missing: why = "expected a microbatch number after the kind, as in 0F1"; return false;
    case number_read::too_large:
      why = "the microbatch is over the limit of " + std::to_string(limits::max_microbatches - 1);
      return false;
  }
  if (pos != text.size()) {
    why = "unexpected text after the microbatch number";
    return false;
  }
  return true;
}

// Puts the forward first; false when the two cannot form a loom pair.
bool order_pair(csv_step& a, csv_step& b) {
  if (a.kind != phase::F && b.kind == phase::F) std::swap(a, b);
  return a.kind == phase::F && b.kind != phase::W;
}

// "(0F7;7B3)OVERLAP_F_B".
bool parse_pair(std::string_view text, csv_cell& out, std::string& why) {
  constexpr std::string_view suffix = ")OVERLAP_F_B";
  std::size_t close = text.find(')');
  if (close == std::string_view::npos || text.substr(close) != suffix) {
    why = "an overlapped pair is written (0F7;7B3)OVERLAP_F_B";
    return false;
  }
  std::string_view inner = text.substr(1, close - 1);
  std::size_t semi = inner.find(';');
  if (semi == std::string_view::npos || inner.find(';', semi + 1) != std::string_view::npos) {
    why = "an overlapped pair holds exactly two actions separated by ';'";
    return false;
  }
  auto trim = [](std::string_view v) {
    while (!v.empty() && is_space(v.front())) v.remove_prefix(1);
    while (!v.empty() && is_space(v.back())) v.remove_suffix(1);
    return v;
  };
  csv_step a, b;
  cell_kind ka, kb;
  std::string why_a, why_b;
  bool ok_a = parse_csv_step(trim(inner.substr(0, semi)), a, ka, why_a);
  bool ok_b = parse_csv_step(trim(inner.substr(semi + 1)), b, kb, why_b);
  if (!ok_a || !ok_b) {
    why = "in the pair: " + (ok_a ? why_b : why_a);
    return false;
  }
  if (ka == cell_kind::comm || kb == cell_kind::comm || !order_pair(a, b)) {
    why = "a pair overlaps a forward with a backward (B or I) or with another forward";
    return false;
  }
  out.first = a;
  out.second = b;
  return true;
}

// Splits one line into cells (commas outside double quotes); each cell is reported with the offset
// of its first non-blank byte and its text without blanks and quotes.
struct raw_cell {
  std::size_t offset;
  std::string_view text;
};

std::vector<raw_cell> split_cells(std::string_view text, std::size_t begin, std::size_t end) {
  std::vector<raw_cell> cells;
  std::size_t pos = begin;
  while (true) {
    while (pos < end && is_space(text[pos])) ++pos;
    std::size_t start = pos;
    bool quoted = false;
    while (pos < end && (quoted || text[pos] != ',')) {
      if (text[pos] == '"') quoted = !quoted;
      ++pos;
    }
    std::string_view cell = text.substr(start, pos - start);
    while (!cell.empty() && is_space(cell.back())) cell.remove_suffix(1);
    if (cell.size() >= 2 && cell.front() == '"' && cell.back() == '"') {
      cell = cell.substr(1, cell.size() - 2);
      while (!cell.empty() && is_space(cell.front())) cell.remove_prefix(1);
      while (!cell.empty() && is_space(cell.back())) cell.remove_suffix(1);
    }
    cells.push_back({start, cell});
    if (pos >= end) break;
    ++pos;  // the comma
  }
  return cells;
}

// Reads every row; errors go to `diags`. Empty cells (idle steps) are dropped.
std::vector<csv_row> read_rows(const source_file& f, std::uint32_t file_id, const csv_import_options& opt,
                               diagnostic_list& diags) {
  std::vector<csv_row> rows;
  std::size_t lines = f.text.empty() ? 0 : f.line_starts.size();
  if (lines > 1 && f.line_starts.back() == f.text.size()) --lines;  // the file ends with a newline
  std::size_t actions = 0;
  for (std::size_t line = 0; line < lines && !diags.full(); ++line) {
    std::size_t begin = f.line_starts[line];
    std::size_t end = line + 1 < f.line_starts.size() ? f.line_starts[line + 1] - 1 : f.text.size();
    if (rows.size() == static_cast<std::size_t>(limits::max_ranks)) {
      diags.error(f.loc_of(file_id, begin), "more than " + std::to_string(limits::max_ranks) + " rows (ranks): over the limit");
      break;
    }
    csv_row row{f.loc_of(file_id, begin), {}};
    for (const auto& raw : split_cells(f.text, begin, end)) {
      if (raw.text.empty() || diags.full()) continue;
      csv_cell cell;
      cell.where = f.loc_of(file_id, raw.offset);
      std::string why;
      cell_kind kind = cell_kind::compute;
      bool ok = raw.text.front() == '(' ? parse_pair(raw.text, cell, why)
                                        : parse_csv_step(raw.text, cell.first, kind, why);
      if (!ok) {
        diags.error(cell.where, "malformed action '" + shown(raw.text) + "': " + why);
        continue;
      }
      if (kind == cell_kind::comm) {
        if (!opt.ignore_comm_actions)
          diags.error(cell.where, "'" + shown(raw.text) +
                                      "' is a communication or FSDP action: a compute-only CSV holds F, B, I, W "
                                      "and OVERLAP_F_B (set ignore_comm_actions to skip these)");
        continue;
      }
      if (++actions > limits::max_actions) {
        diags.error(cell.where, "more than " + std::to_string(limits::max_actions) + " actions: over the limit");
        break;
      }
      row.cells.push_back(cell);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

template <class Fn>
void for_each_step(const std::vector<csv_row>& rows, Fn&& fn) {
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (const auto& cell : rows[r].cells) {
      fn(static_cast<int>(r), cell.first, cell.where);
      if (cell.second) fn(static_cast<int>(r), *cell.second, cell.where);
    }
}

// Where each global stage lives.
struct global_place {
  int rank = -1;
  int chunk = 0;
  stage_ref ref;
};

// The inferred placement: each stage on the one rank that runs it, a rank's stages ascending.
void infer_placement(const std::vector<csv_row>& rows, const source_loc& file_loc, schedule& s,
                     std::map<int, global_place>& places, diagnostic_list& diags) {
  std::map<int, std::pair<source_loc, int>> first_seen;  // stage -> where and on which rank
  int mbs = 0;
  for_each_step(rows, [&](int rank, const csv_step& st, const source_loc& where) {
    mbs = std::max(mbs, st.microbatch + 1);
    auto [it, fresh] = places.try_emplace(st.stage, global_place{rank, 0, {0, st.stage}});
    if (fresh) {
      first_seen[st.stage] = {where, rank};
    } else if (it->second.rank != rank && !diags.full()) {
      const auto& [first_loc, first_rank] = first_seen[st.stage];
      auto& d = diags.error(where, "stage " + std::to_string(st.stage) + " appears on rank " +
                                       std::to_string(first_rank) + " and on rank " + std::to_string(rank) +
                                       ": each stage lives on one rank (pass a placement to import this)");
      d.notes.push_back({severity::note, first_loc, "first seen here, on rank " + std::to_string(first_rank), {}});
      it->second.rank = rank;  // one error per further rank, not per cell
    }
  });
  const int stages = places.empty() ? 0 : places.rbegin()->first + 1;
  for (int g = 0; g < stages && !diags.full(); ++g)
    if (!places.count(g))
      diags.error(file_loc, "no rank runs stage " + std::to_string(g) + ": stages must be numbered 0 to " +
                                std::to_string(stages - 1) + " without gaps");
  if (places.empty()) diags.error(file_loc, "the file holds no action: no schedule to import");
  if (diags.has_errors()) return;
  s.pipelines = {{"main", stages, mbs}};
  s.placement.assign(rows.size(), {});
  for (auto& [g, place] : places) {  // ascending stage order
    auto& chunks = s.placement[place.rank];
    if (chunks.size() == static_cast<std::size_t>(limits::max_chunks_per_rank)) {
      diags.error(rows[place.rank].where, "rank " + std::to_string(place.rank) + " runs more than " +
                                              std::to_string(limits::max_chunks_per_rank) + " stages: over the limit");
      return;
    }
    place.chunk = static_cast<int>(chunks.size());
    chunks.push_back(place.ref);
  }
}

// The caller's placement; checked, as it comes from outside.
expected<void> given_placement(const csv_import_options& opt, std::size_t rows, schedule& s,
                               std::map<int, global_place>& places) {
  if (opt.placement.size() != rows)
    return unexpected(errc::invalid_argument, "the placement names " + std::to_string(opt.placement.size()) +
                                                  " ranks but the file has " + std::to_string(rows) + " rows");
  const auto offsets = stage_offsets(opt.pipelines);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < opt.placement[r].size(); ++c) {
      const stage_ref ref = opt.placement[r][c];
      if (ref.pipeline < 0 || ref.pipeline >= static_cast<int>(opt.pipelines.size()) || ref.stage < 0 ||
          ref.stage >= opt.pipelines[ref.pipeline].stages)
        return unexpected(errc::invalid_argument, "the placement of rank " + std::to_string(r) + ", chunk " +
                                                      std::to_string(c) + " names no stage of the given pipelines");
      auto [it, fresh] = places.try_emplace(offsets[ref.pipeline] + ref.stage,
                                            global_place{static_cast<int>(r), static_cast<int>(c), ref});
      if (!fresh)
        return unexpected(errc::invalid_argument, "the placement puts global stage " + std::to_string(it->first) +
                                                      " on two ranks or chunks");
    }
  s.pipelines = opt.pipelines;
  s.placement = opt.placement;
  return {};
}

// Checks every step against the placement and fills in inferred microbatch counts.
void check_steps(const std::vector<csv_row>& rows, const csv_import_options& opt, schedule& s,
                 const std::map<int, global_place>& places, diagnostic_list& diags) {
  std::vector<int> mbs(s.pipelines.size(), 0);
  for_each_step(rows, [&](int rank, const csv_step& st, const source_loc& where) {
    if (diags.full()) return;
    auto it = places.find(st.stage);
    if (it == places.end()) {
      diags.error(where, "stage " + std::to_string(st.stage) + " is not in the given placement");
      return;
    }
    if (it->second.rank != rank) {
      diags.error(where, "stage " + std::to_string(st.stage) + " belongs to rank " + std::to_string(it->second.rank) +
                             " in the given placement, not to rank " + std::to_string(rank));
      return;
    }
    const int p = it->second.ref.pipeline;
    mbs[p] = std::max(mbs[p], st.microbatch + 1);
    if (!opt.pipelines.empty() && opt.pipelines[p].microbatches > 0 && st.microbatch >= opt.pipelines[p].microbatches)
      diags.error(where, "microbatch " + std::to_string(st.microbatch) + " is out of range: pipeline '" +
                             s.pipelines[p].name + "' carries " + std::to_string(opt.pipelines[p].microbatches));
  });
  for (std::size_t p = 0; p < s.pipelines.size(); ++p)
    if (s.pipelines[p].microbatches == 0) s.pipelines[p].microbatches = mbs[p];
}

step to_step(const csv_step& st, const std::map<int, global_place>& places) {
  return {st.kind, places.at(st.stage).chunk, st.microbatch};
}

}  // namespace

expected<schedule> parse_pytorch_csv(const source_set& sources, std::uint32_t file_id,
                                     const csv_import_options& options) {
  const source_file& f = sources.file(file_id);
  diagnostic_list diags;
  schedule s;
  s.name = options.name;
  s.where = f.loc_of(file_id, 0);
  const auto rows = read_rows(f, file_id, options, diags);
  if (!diags.has_errors() && rows.empty()) diags.error(s.where, "the file holds no row: no schedule to import");
  if (diags.has_errors()) return unexpected(to_error(sources, diags));

  std::map<int, global_place> places;
  if (options.pipelines.empty()) {
    infer_placement(rows, s.where, s, places, diags);
  } else if (auto given = given_placement(options, rows.size(), s, places); !given) {
    return unexpected(given.error());
  }
  if (!diags.has_errors()) check_steps(rows, options, s, places, diags);
  if (diags.has_errors()) return unexpected(to_error(sources, diags));

  for (const auto& row : rows) {
    s.rank_where.push_back(row.where);
    auto& prog = s.programs.emplace_back();
    for (const auto& cell : row.cells) {
      action a;
      a.first = to_step(cell.first, places);
      if (cell.second) a.second = to_step(*cell.second, places);
      a.where = cell.where;
      prog.push_back(a);
    }
  }
  s.params = {{"ranks", s.ranks()}, {"microbatches", s.total_microbatches()}};
  return s;
}

}  // namespace loom::schedule
