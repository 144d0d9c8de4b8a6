#include "dsl/load.hpp"

#include "runtime/schedule/action_text.hpp"
#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/pytorch_csv.hpp"
#include "runtime/schedule/validate.hpp"

namespace loom::dsl {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

expected<loaded_schedule> load_schedule(const load_request& request, const file_reader& read) {
  loaded_schedule out;
  out.sources = std::make_shared<source_set>();
  source_set& sources = *out.sources;

  if (ends_with(request.path, ".csv") || ends_with(request.path, ".txt") || ends_with(request.path, ".actions")) {
    auto id = read(sources, request.path);
    if (!id) return unexpected(id.error());
    if (!request.set.empty())
      return unexpected(errc::invalid_argument, request.path + ": --set applies to schedules in the language; this file "
                                                               "lists actions, which take no parameters");
    bool csv = ends_with(request.path, ".csv");
    auto s = csv ? schedule::parse_pytorch_csv(sources, *id, {}) : schedule::parse_actions(sources, *id);
    if (!s) return unexpected(s.error());
    out.sched = std::move(*s);
    out.format = csv ? schedule_format::pytorch_csv : schedule_format::action_text;
  } else {
    // A language file; but a file of action text without the .txt extension is accepted too.
    auto probe = read(sources, request.path);
    if (!probe) return unexpected(probe.error());
    if (schedule::looks_like_action_text(sources.file(*probe).text)) {
      if (!request.set.empty())
        return unexpected(errc::invalid_argument, request.path + ": --set applies to schedules in the language; this file "
                                                                 "lists actions, which take no parameters");
      auto s = schedule::parse_actions(sources, *probe);
      if (!s) return unexpected(s.error());
      out.sched = std::move(*s);
      out.format = schedule_format::action_text;
    } else {
      const std::uint32_t main_id = *probe;
      file_reader reuse = [&](source_set& src, const std::string& path) -> expected<std::uint32_t> {
        if (path == request.path) return main_id;
        return read(src, path);
      };
      compile_request creq{request.path, request.set, request.schedule_name};
      auto s = compile(sources, creq, reuse);
      if (!s) return unexpected(s.error());
      out.sched = std::move(*s);
      out.format = schedule_format::language;
    }
  }
  if (request.validate) {
    if (auto ok = schedule::validate(out.sched, sources); !ok) return unexpected(ok.error());
  }
  return out;
}

}  // namespace loom::dsl
