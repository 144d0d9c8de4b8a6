// Wall-clock time as the daemon records it: Unix seconds in a double, shown as local time.
#pragma once

#include <string>

namespace loom::daemon {

double unix_now();
// "2025-01-31 14:03:07 +0100"; "-" for 0.
std::string format_time(double unix_seconds);

}  // namespace loom::daemon
