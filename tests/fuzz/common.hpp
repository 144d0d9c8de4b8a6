// Shared checks of the fuzz targets: a schedule that validates must run to the end in the
// action-level simulator and survive the canonical action text round trip. A failure is a bug in
// loom, reported with abort() so libFuzzer keeps the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/schedule.hpp"
#include "runtime/schedule/validate.hpp"
#include "runtime/sim/action_sim.hpp"
#include "support/source.hpp"

namespace loom::fuzz {

[[noreturn]] inline void bug(const std::string& what, const std::string& detail) {
  std::fprintf(stderr, "fuzz: BUG: %s\n%s\n", what.c_str(), detail.c_str());
  std::abort();
}

// Small enough to simulate on every input without slowing the fuzzer down.
inline constexpr std::size_t max_checked_actions = 20000;

// The simulator finishes every action of a validated schedule (validate's deadlock model is at
// least as strict as the simulator's).
inline void check_simulates(const schedule::schedule& s) {
  auto t = sim::simulate_actions(s, sim::action_costs{});
  for (int r = 0; r < s.ranks(); ++r)
    for (std::size_t i = 0; i < s.programs[r].size(); ++i)
      if (t.spans[r][i].end < 0)
        bug("a validated schedule stalls in the action simulator at rank " + std::to_string(r) + " action " +
                std::to_string(i) + " (" + schedule::to_string(s.programs[r][i]) + ")",
            schedule::format_actions(s, true));
}

// format_actions (with placement lines) parses back, validates, and formats identically.
inline void check_action_text_round_trip(const schedule::schedule& s) {
  const std::string text = schedule::format_actions(s, true);
  source_set src;
  auto id = src.add("round-trip.txt", text);
  auto back = schedule::parse_actions(src, id);
  if (!back) bug("format_actions output does not parse back: " + back.error().message, text);
  if (auto ok = schedule::validate(*back, src); !ok)
    bug("format_actions output of a valid schedule does not validate: " + ok.error().message, text);
  const std::string again = schedule::format_actions(*back, true);
  if (again != text) bug("format_actions -> parse_actions -> format_actions changes the text", text + "---\n" + again);
}

}  // namespace loom::fuzz
