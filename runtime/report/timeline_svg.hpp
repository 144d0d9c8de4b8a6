// The pipeline picture of a timeline, as in the DualPipe figure of the DeepSeek-V3 report: one row
// per rank ("Device r"; "Rank r / ep e" per expert-parallel member when t.ep > 1 and events differ
// by ep), time to the right, one cell per action with its microbatch written inside. Forward,
// backward, input-backward and weight-backward have distinct hues; pipeline 0 and pipeline 1 (the
// two directions of DualPipe) a dark and a light shade of each (further pipelines alternate). An
// overlapped pair is one cell split in two halves (forward | backward or second forward) with a
// thick frame. Idle time stays white over a light grid; a legend, the title and a time axis in
// t.unit complete it. Standalone SVG 1.1, deterministic for a given timeline and options.
#pragma once

#include <string>
#include <string_view>

#include "runtime/report/timeline.hpp"

namespace loom::report {

struct svg_options {
  bool components = false;  // two thin sub-rows (compute, comm streams) per row for component spans
  double width = 0;         // plot width in px; 0: about 20 px per shortest action, within 720..2400
  double row_height = 0;    // action row height in px; 0: 26 for up to 16 rows, less for more
  bool numbers = true;      // microbatch numbers in the cells wide enough to hold them
  bool tooltips = true;     // a <title> per cell: the token, rank and times, shown on hover
};

std::string render_svg(const timeline& t, const svg_options& opt = {});

// Text made safe for XML character data and attribute values: &, <, >, " and ' escaped, control
// bytes and invalid UTF-8 replaced by '?'.
std::string xml_escape(std::string_view text);

}  // namespace loom::report
