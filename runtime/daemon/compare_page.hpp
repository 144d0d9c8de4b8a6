// `loom compare`'s page: one static, self-contained HTML file (no server, no external resource)
// with the experiments' measured timelines side by side (their SVGs inlined, each stylesheet scoped
// to its own timeline), and tables and bars built by a small inline script from the embedded
// reports: step time, measured vs predicted bubble, time per component, peak activation memory.
// When the script has run it adds an element with id "loom-rendered"; script errors are written
// into the element with id "loom-errors" (a headless browser test reads both).
#pragma once

#include <string>
#include <vector>

#include "runtime/daemon/protocol.hpp"

namespace loom::daemon {

struct compared_experiment {
  experiment_info info;
  std::string report_json;   // report.json as the run wrote it ("" when there is none)
  std::string timeline_svg;  // timeline.svg ("" when there is none)
};

std::string compare_page(const std::vector<compared_experiment>& experiments, const std::string& title);

// The SVG made safe to inline: the XML declaration dropped, its stylesheet scoped under `#scope_id`.
// Empty when the text does not look like a plain SVG (a script, an event handler): the page then
// shows it as an image instead, where nothing in it can run.
std::string inline_svg(const std::string& svg, const std::string& scope_id);

}  // namespace loom::daemon
