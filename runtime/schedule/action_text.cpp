#include "runtime/schedule/action_text.hpp"

#include <cctype>
#include <functional>

#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/validate.hpp"

namespace loom::schedule {

std::string format_actions(const schedule& s, bool with_placement) {
  std::string out;
  if (with_placement) {
    for (const auto& p : s.pipelines)
      out += "pipeline " + p.name + " stages=" + std::to_string(p.stages) + " microbatches=" +
             std::to_string(p.microbatches) + "\n";
    for (int r = 0; r < s.ranks(); ++r) {
      out += "place rank " + std::to_string(r) + ":";
      for (const auto& ref : s.placement[r])
        out += " " + s.pipelines[ref.pipeline].name + "[" + std::to_string(ref.stage) + "]";
      out += "\n";
    }
  }
  for (int r = 0; r < s.ranks(); ++r) {
    out += "rank " + std::to_string(r) + ":";
    for (const auto& a : s.programs[r]) {
      out += ' ';
      out += to_string(a);
    }
    out += '\n';
  }
  return out;
}

bool looks_like_action_text(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) ++i;
    if (i < text.size() && text[i] == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    auto rest = text.substr(i);
    auto word = [&](std::string_view w) {
      return rest.substr(0, w.size()) == w && (rest.size() == w.size() || rest[w.size()] == ' ' || rest[w.size()] == '\t');
    };
    return word("rank") || word("pipeline") || word("place");
  }
  return false;
}

namespace {

// A cursor over one line with located errors.
class line_reader {
 public:
  line_reader(const source_file& f, std::uint32_t file_id, std::size_t begin, std::size_t end, diagnostic_list& d)
      : f_(f), id_(file_id), pos_(begin), end_(end), diags_(d) {}

  void skip_space() {
    while (pos_ < end_ && (f_.text[pos_] == ' ' || f_.text[pos_] == '\t' || f_.text[pos_] == '\r')) ++pos_;
  }
  bool done() {
    skip_space();
    return pos_ >= end_ || f_.text[pos_] == '#';
  }
  char peek() const { return pos_ < end_ ? f_.text[pos_] : '\0'; }
  source_loc loc() const { return f_.loc_of(id_, pos_); }
  bool accept(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  bool expect(char c, const char* what) {
    if (accept(c)) return true;
    fail(std::string("expected ") + what);
    return false;
  }
  bool word(std::string_view w) {
    skip_space();
    if (f_.text.compare(pos_, w.size(), w) != 0) return false;
    std::size_t after = pos_ + w.size();
    if (after < end_ && (std::isalnum(static_cast<unsigned char>(f_.text[after])) || f_.text[after] == '_')) return false;
    pos_ = after;
    return true;
  }
  // A non-negative decimal number no larger than `max`.
  bool number(int max, int& out, const char* what) {
    if (!std::isdigit(static_cast<unsigned char>(peek()))) {
      fail(std::string("expected ") + what);
      return false;
    }
    source_loc at = loc();
    long long v = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      v = v * 10 + (peek() - '0');
      ++pos_;
      if (v > max) {
        diags_.error(at, std::string(what) + " is too large (the limit is " + std::to_string(max) + ")");
        while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
        return false;
      }
    }
    out = static_cast<int>(v);
    return true;
  }
  std::string identifier() {
    std::size_t start = pos_;
    while (pos_ < end_ && (std::isalnum(static_cast<unsigned char>(f_.text[pos_])) || f_.text[pos_] == '_')) ++pos_;
    return f_.text.substr(start, pos_ - start);
  }
  void fail(std::string message) {
    diags_.error(loc(), std::move(message) + (pos_ < end_ ? describe_here() : " at the end of the line"));
  }

 private:
  std::string describe_here() const {
    unsigned char c = static_cast<unsigned char>(f_.text[pos_]);
    if (c >= 0x21 && c < 0x7f) return std::string(", found '") + static_cast<char>(c) + "'";
    char buf[32];
    std::snprintf(buf, sizeof buf, ", found byte 0x%02x", c);
    return buf;
  }
  const source_file& f_;
  std::uint32_t id_;
  std::size_t pos_, end_;
  diagnostic_list& diags_;
};

bool parse_step(line_reader& in, step& out) {
  char k = in.peek();
  switch (k) {
    case 'F': out.kind = phase::F; break;
    case 'B': out.kind = phase::B; break;
    case 'I': out.kind = phase::I; break;
    case 'W': out.kind = phase::W; break;
    default: in.fail("expected an action F, B, I or W"); return false;
  }
  in.accept(k);
  if (!in.number(limits::max_chunks_per_rank - 1, out.chunk, "a chunk number")) return false;
  if (!in.expect('.', "'.' between chunk and microbatch")) return false;
  return in.number(limits::max_microbatches - 1, out.microbatch, "a microbatch number");
}

struct placement_line {
  int rank;
  std::vector<std::pair<std::string, int>> stages;
  source_loc where;
};

// Placement candidates for a schedule given without placement lines.
using placer = std::function<void(schedule&, int chunks, int mbs)>;

void place_linear(schedule& s, int chunks, int mbs) {
  const int R = s.ranks();
  s.pipelines = {{"main", R * chunks, mbs}};
  s.placement.assign(R, {});
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < chunks; ++c) s.placement[r].push_back({0, c * R + r});
}

void place_v(schedule& s, int, int mbs) {
  const int R = s.ranks();
  s.pipelines = {{"main", 2 * R, mbs}};
  s.placement.assign(R, {});
  for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}, {0, 2 * R - 1 - r}};
}

void place_dual(schedule& s, int, int mbs) {
  const int R = s.ranks();
  s.pipelines = {{"a", R, mbs}, {"b", R, mbs}};
  s.placement.assign(R, {});
  for (int r = 0; r < R; ++r) s.placement[r] = {{0, r}, {1, R - 1 - r}};
}

}  // namespace

expected<schedule> parse_actions(const source_set& sources, std::uint32_t file_id) {
  const source_file& f = sources.file(file_id);
  diagnostic_list diags;
  schedule s;
  s.name = "actions";
  s.where = f.loc_of(file_id, 0);
  std::vector<bool> have_rank;
  std::vector<placement_line> places;
  std::size_t actions = 0;

  for (std::uint32_t line = 1; line <= f.line_starts.size() && !diags.full(); ++line) {
    std::size_t begin = f.line_starts[line - 1];
    std::size_t end = line < f.line_starts.size() ? f.line_starts[line] - 1 : f.text.size();  // without '\n'
    line_reader in(f, file_id, begin, end, diags);
    if (in.done()) continue;
    source_loc line_loc = in.loc();
    if (in.word("pipeline")) {
      in.skip_space();
      std::string name = in.identifier();
      if (name.empty()) { in.fail("expected a pipeline name"); continue; }
      pipeline p{name, 0, 0};
      bool ok = true;
      while (ok && !in.done()) {
        if (in.word("stages")) {
          ok = in.expect('=', "'='") && in.number(limits::max_ranks * limits::max_chunks_per_rank, p.stages, "a stage count");
        } else if (in.word("microbatches")) {
          ok = in.expect('=', "'='") && in.number(limits::max_microbatches, p.microbatches, "a microbatch count");
        } else {
          in.fail("expected 'stages=' or 'microbatches='");
          ok = false;
        }
      }
      if (ok) s.pipelines.push_back(p);
      continue;
    }
    if (in.word("place")) {
      placement_line pl{0, {}, line_loc};
      if (!in.word("rank")) { in.fail("expected 'rank' after 'place'"); continue; }
      in.skip_space();
      if (!in.number(limits::max_ranks - 1, pl.rank, "a rank number")) continue;
      in.skip_space();
      if (!in.expect(':', "':' after the rank number")) continue;
      bool ok = true;
      while (ok && !in.done()) {
        std::string name = in.identifier();
        int stage = 0;
        if (name.empty()) { in.fail("expected a stage like main[0]"); ok = false; break; }
        ok = in.expect('[', "'['") && in.number(limits::max_ranks * limits::max_chunks_per_rank, stage, "a stage number") &&
             in.expect(']', "']'");
        if (ok) pl.stages.emplace_back(name, stage);
      }
      if (ok) places.push_back(std::move(pl));
      continue;
    }
    if (!in.word("rank")) {
      in.fail("expected 'rank R: actions...', 'pipeline' or 'place'");
      continue;
    }
    in.skip_space();
    int r = 0;
    if (!in.number(limits::max_ranks - 1, r, "a rank number")) continue;
    in.skip_space();
    if (!in.expect(':', "':' after the rank number")) continue;
    if (static_cast<int>(have_rank.size()) <= r) {
      have_rank.resize(r + 1, false);
      s.programs.resize(r + 1);
      s.rank_where.resize(r + 1);
    }
    if (have_rank[r]) {
      diags.error(line_loc, "rank " + std::to_string(r) + " is listed twice");
      continue;
    }
    have_rank[r] = true;
    s.rank_where[r] = line_loc;
    auto& prog = s.programs[r];
    while (!in.done() && !diags.full()) {
      action a;
      a.where = in.loc();
      if (!parse_step(in, a.first)) break;
      if (in.accept('+')) {
        step second;
        if (!parse_step(in, second)) break;
        a.second = second;
      }
      char next = in.peek();
      if (next != ' ' && next != '\t' && next != '\r' && next != '\n' && next != '#' && next != '\0') {
        in.fail("expected a space between actions");
        break;
      }
      if (++actions > limits::max_actions) {
        diags.error(a.where, "more than " + std::to_string(limits::max_actions) + " actions: over the limit");
        break;
      }
      prog.push_back(a);
    }
  }
  if (!diags.has_errors()) {
    if (have_rank.empty()) diags.error(s.where, "no 'rank R: ...' line: the file holds no schedule");
    for (std::size_t r = 0; r < have_rank.size(); ++r)
      if (!have_rank[r]) diags.error(s.where, "rank " + std::to_string(r) + " has no line (ranks are numbered from 0)");
  }
  if (diags.has_errors()) return unexpected(to_error(sources, diags));

  const int R = s.ranks();
  int chunks = 0, mbs = 0;
  for (const auto& prog : s.programs)
    for (const auto& a : prog) {
      chunks = std::max({chunks, a.first.chunk + 1, a.second ? a.second->chunk + 1 : 0});
      mbs = std::max({mbs, a.first.microbatch + 1, a.second ? a.second->microbatch + 1 : 0});
    }
  s.params = {{"ranks", R}};

  if (!places.empty() || !s.pipelines.empty()) {
    s.placement.assign(R, {});
    std::vector<bool> placed(R, false);
    for (const auto& pl : places) {
      if (pl.rank >= R) { diags.error(pl.where, "rank " + std::to_string(pl.rank) + " has no program line"); continue; }
      if (placed[pl.rank]) { diags.error(pl.where, "rank " + std::to_string(pl.rank) + " is placed twice"); continue; }
      placed[pl.rank] = true;
      for (const auto& [name, stage] : pl.stages) {
        int p = -1;
        for (std::size_t i = 0; i < s.pipelines.size(); ++i)
          if (s.pipelines[i].name == name) p = static_cast<int>(i);
        if (p < 0) diags.error(pl.where, "unknown pipeline '" + name + "' (declare it with a 'pipeline' line)");
        s.placement[pl.rank].push_back({p, stage});
      }
    }
    for (int r = 0; r < R; ++r)
      if (!placed[r]) diags.error(s.rank_where[r], "rank " + std::to_string(r) + " has no 'place' line");
    if (diags.has_errors()) return unexpected(to_error(sources, diags));
    s.params["microbatches"] = s.total_microbatches();
    return s;
  }

  std::vector<std::pair<const char*, placer>> candidates;
  if (chunks <= 1) candidates = {{"one pipeline", place_linear}};
  else if (chunks == 2) candidates = {{"DualPipeV's V", place_v}, {"DualPipe's two pipelines", place_dual}, {"interleaved", place_linear}};
  else candidates = {{"interleaved", place_linear}};
  if (candidates.size() == 1) {  // nothing to choose: report the schedule's own errors
    candidates.front().second(s, std::max(chunks, 1), mbs);
    s.params["microbatches"] = s.total_microbatches();
    return s;
  }
  std::string first_failure;
  for (const auto& [label, place] : candidates) {
    place(s, std::max(chunks, 1), mbs);
    diagnostic_list trial;
    check_structure(s, trial);
    if (!trial.has_errors()) check_feasible(s, trial);
    if (!trial.has_errors()) {
      s.params["microbatches"] = s.total_microbatches();
      return s;
    }
    if (first_failure.empty()) first_failure = std::string("as ") + label + ":\n" + render(sources, trial);
  }
  std::string tried;
  for (const auto& c : candidates) tried += std::string(tried.empty() ? "" : ", ") + c.first;
  return unexpected(errc::invalid_schedule,
                    f.path + ": no placement fits these actions (tried " + tried +
                        "); add 'pipeline' and 'place' lines to say which stages each rank holds. The first attempt, " +
                        first_failure);
}

}  // namespace loom::schedule
