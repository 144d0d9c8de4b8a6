// The canonical action text: one line per rank, `rank R: tok tok ...`, tokens F0.3, B1.2, I0.5,
// W0.5 and pairs F0.7+B1.3 (forward first). It is what `loom compile --emit actions` prints and
// itself a loadable schedule.
//
// Optional lines make the placement explicit (and are printed with `with_placement`):
//   pipeline a stages=4 microbatches=4
//   place rank 0: a[0] b[3]
// '#' starts a comment. Without placement lines it is inferred from the chunk count: one chunk per
// rank is a plain pipeline; two chunks try, in order, DualPipeV's V (stages r and 2R-1-r), DualPipe's
// two pipelines fed from both ends, and interleaving (stage c*R + r); more chunks interleave. The
// first that validates is taken.
#pragma once

#include <string>

#include "runtime/schedule/schedule.hpp"
#include "support/diagnostic.hpp"

namespace loom::schedule {

std::string format_actions(const schedule& s, bool with_placement = false);

// Parses the text of sources.file(file_id). Errors are located at the offending token.
expected<schedule> parse_actions(const source_set& sources, std::uint32_t file_id);

// True when the text looks like action text rather than the schedule language (its first
// non-comment line starts with "rank", "pipeline" or "place").
bool looks_like_action_text(std::string_view text);

}  // namespace loom::schedule
