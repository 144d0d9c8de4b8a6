// libFuzzer target: the bytes as canonical action text (parse_actions) and as PyTorch pipelining CSV
// (parse_pytorch_csv). What parses is validated; what validates is simulated (when small) and
// formatted back, which must parse again to the same text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/pytorch_csv.hpp"
#include "tests/fuzz/common.hpp"

using namespace loom;

namespace {

void as_action_text(const std::string& text) {
  source_set src;
  auto id = src.add("fuzz.txt", text);
  auto s = schedule::parse_actions(src, id);
  if (!s) {
    if (s.error().message.empty()) fuzz::bug("an action-text error without a message", text);
    return;
  }
  // Whatever parsed formats back to text that parses again to the same schedule text.
  {
    const std::string out = schedule::format_actions(*s, true);
    source_set again;
    auto back = schedule::parse_actions(again, again.add("again.txt", out));
    if (!back) fuzz::bug("format_actions output does not parse back: " + back.error().message, text + "---\n" + out);
    if (schedule::format_actions(*back, true) != out) fuzz::bug("action text does not round-trip", text + "---\n" + out);
  }
  if (!schedule::validate(*s, src)) return;
  if (s->action_count() >= fuzz::max_checked_actions) return;
  fuzz::check_simulates(*s);
  fuzz::check_action_text_round_trip(*s);
  // A valid schedule exports to CSV; the CSV imports back when the schedule has one pipeline and each
  // rank's stages ascend with its chunks (the inferred placement).
  (void)schedule::format_pytorch_csv(*s);
}

void as_csv(const std::string& text) {
  source_set src;
  auto id = src.add("fuzz.csv", text);
  auto s = schedule::parse_pytorch_csv(src, id);
  if (!s) {
    if (s.error().message.empty()) fuzz::bug("a CSV error without a message", text);
    return;
  }
  const std::string out = schedule::format_pytorch_csv(*s);
  source_set again;
  auto back = schedule::parse_pytorch_csv(again, again.add("again.csv", out));
  if (!back) fuzz::bug("format_pytorch_csv output does not parse back: " + back.error().message, text + "---\n" + out);
  if (schedule::format_pytorch_csv(*back) != out) fuzz::bug("PyTorch CSV does not round-trip", text + "---\n" + out);
  if (!schedule::validate(*s, src)) return;
  if (s->action_count() >= fuzz::max_checked_actions) return;
  fuzz::check_simulates(*s);
  fuzz::check_action_text_round_trip(*s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > schedule::limits::max_file_bytes) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  as_action_text(text);
  as_csv(text);
  return 0;
}
