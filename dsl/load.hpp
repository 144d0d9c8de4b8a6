// Loading a schedule from any of the forms loom reads: the schedule language (.sched), the
// canonical action text (rank R: F0.0 ...) and PyTorch pipelining's CSV (.csv), then validating it.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "dsl/compile.hpp"
#include "runtime/schedule/schedule.hpp"

namespace loom::dsl {

enum class schedule_format { language, action_text, pytorch_csv };

struct loaded_schedule {
  std::shared_ptr<source_set> sources;  // the files read, for locating later errors
  schedule::schedule sched;
  schedule_format format = schedule_format::language;
};

struct load_request {
  std::string path;
  std::map<std::string, std::string> set;  // parameters (the language only)
  std::string schedule_name;               // which schedule of a language file
  bool validate = true;                    // run the structural and deadlock checks
};

// The format is taken from the extension (.csv) or, for other files, from the content.
expected<loaded_schedule> load_schedule(const load_request& request, const file_reader& read = disk_reader());

}  // namespace loom::dsl
