// libFuzzer target: the bytes are a schedule-language file "fuzz.sched". Imports are refused (the
// reader serves only the main file). It compiles (without --set, then with ranks=4 / microbatches=8
// when a parameter has no default), validates, and for small valid schedules simulates and round-trips
// the action text; any broken invariant aborts.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsl/compile.hpp"
#include "runtime/schedule/limits.hpp"
#include "tests/fuzz/common.hpp"

namespace {

using namespace loom;

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

expected<schedule::schedule> compile_with(source_set& src, const std::string& text,
                                          const std::map<std::string, std::string>& set) {
  dsl::file_reader reader = [&text](source_set& sources, const std::string& path) -> expected<std::uint32_t> {
    if (path == "fuzz.sched") return sources.add(path, text);
    return unexpected(errc::io_error, path + ": imports are refused while fuzzing");
  };
  dsl::compile_request req;
  req.path = "fuzz.sched";
  req.set = set;
  return dsl::compile(src, req, reader);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > schedule::limits::max_file_bytes) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);

  auto src = std::make_unique<source_set>();
  auto s = compile_with(*src, text, {});
  if (!s && contains(s.error().message, "has no default")) {
    const std::vector<std::map<std::string, std::string>> tries = {
        {{"ranks", "4"}, {"microbatches", "8"}}, {{"ranks", "4"}}, {{"microbatches", "8"}}};
    for (const auto& set : tries) {
      src = std::make_unique<source_set>();
      s = compile_with(*src, text, set);
      if (s || !contains(s.error().message, "has no parameter")) break;
    }
  }
  if (!s) {
    if (s.error().message.empty()) fuzz::bug("a compile error without a message", text);
    return 0;
  }
  if (auto ok = schedule::validate(*s, *src); !ok) {
    if (ok.error().message.empty()) fuzz::bug("a validation error without a message", text);
    return 0;
  }
  if (s->action_count() >= fuzz::max_checked_actions) return 0;
  fuzz::check_simulates(*s);
  fuzz::check_action_text_round_trip(*s);
  return 0;
}
