#include "dsl/compile.hpp"

#include <charconv>
#include <filesystem>
#include <memory>
#include <unordered_map>

#include "dsl/evaluator.hpp"
#include "dsl/lexer.hpp"
#include "dsl/parser.hpp"
#include "runtime/schedule/limits.hpp"
#include "runtime/schedule/recipe.hpp"

namespace loom::dsl {

namespace limits = schedule::limits;

file_reader disk_reader() {
  return [](source_set& sources, const std::string& path) { return sources.load(path, limits::max_file_bytes); };
}

expected<std::pair<std::string, std::string>> parse_assignment(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    return unexpected(errc::invalid_argument, "'" + text + "' is not NAME=VALUE");
  return std::pair{text.substr(0, eq), text.substr(eq + 1)};
}

namespace {

struct parsed_file {
  std::uint32_t id;
  file_ast ast;
};

class compiler {
 public:
  compiler(source_set& s, const file_reader& r) : sources_(s), read_(r) {}

  // Reads, lexes and parses `path` and, depth first, the files it imports.
  void load(const std::string& path, source_loc from, int depth) {
    if (depth > limits::max_import_depth) {
      diags_.limit_error(from, "imports nest deeper than " + std::to_string(limits::max_import_depth) + " files");
      return;
    }
    std::string key = std::filesystem::path(path).lexically_normal().string();
    for (const auto& open : stack_)
      if (open == key) {
        diags_.error(from, "import cycle: '" + path + "' imports itself, directly or through other files");
        return;
      }
    for (const auto& done : loaded_)
      if (done == key) return;  // imported twice through different files: once is enough
    auto id = read_(sources_, path);
    if (!id) {
      if (id.error().code == errc::limit_exceeded) diags_.limit_error(from, id.error().message);
      else diags_.error(from, id.error().message);
      return;
    }
    total_bytes_ += sources_.file(*id).text.size();
    if (total_bytes_ > limits::max_total_source_bytes) {
      diags_.limit_error(from, "the schedule and its imports exceed " + std::to_string(limits::max_total_source_bytes) + " bytes");
      return;
    }
    stack_.push_back(key);
    loaded_.push_back(key);
    auto tokens = lex(sources_, *id, diags_);
    files_.push_back(std::make_unique<parsed_file>(parsed_file{*id, parse(tokens, diags_)}));
    parsed_file& f = *files_.back();
    std::filesystem::path dir = std::filesystem::path(path).parent_path();
    for (const auto& imp : f.ast.imports) {
      std::filesystem::path target = std::filesystem::path(imp.path).is_absolute() ? std::filesystem::path(imp.path) : dir / imp.path;
      load(target.string(), imp.loc, depth + 1);
    }
    stack_.pop_back();
  }

  expected<schedule::schedule> finish(const compile_request& req) {
    if (files_.empty()) return fail();
    const file_ast& main = files_.front()->ast;
    std::vector<const schedule::overlap_recipe*> recipes;
    std::unordered_map<std::string, const schedule::overlap_recipe*> recipe_names;
    for (const auto& f : files_)
      for (const auto& r : f->ast.recipes) {
        auto [it, fresh] = recipe_names.emplace(r.name, &r);
        if (!fresh) {
          auto& d = diags_.error(r.where, "overlap recipe '" + r.name + "' is defined twice");
          d.notes.push_back({severity::note, it->second->where, "first defined here", {}});
        }
        schedule::check_recipe(r, diags_);
        recipes.push_back(&r);
        if (diags_.full()) break;
      }
    if (diags_.has_errors()) return fail();

    const schedule_decl* decl = nullptr;
    if (main.schedules.empty()) {
      diags_.error(sources_.file(files_.front()->id).loc_of(files_.front()->id, 0),
                   "this file defines no schedule" +
                       std::string(main.recipes.empty() ? "" : " (it holds overlap recipes, which a schedule imports)"));
      return fail();
    }
    if (req.schedule_name.empty()) {
      if (main.schedules.size() > 1) {
        std::string names;
        for (const auto& s : main.schedules) names += (names.empty() ? "" : ", ") + s.name;
        diags_.error(main.schedules[1].loc, "the file defines several schedules (" + names + "); choose one by name");
        return fail();
      }
      decl = &main.schedules.front();
    } else {
      for (const auto& s : main.schedules)
        if (s.name == req.schedule_name) decl = &s;
      if (!decl) {
        diags_.error(main.schedules.front().loc, "the file has no schedule named '" + req.schedule_name + "'");
        return fail();
      }
    }

    evaluation_input in;
    in.decl = decl;
    in.recipes = recipes;
    std::unordered_map<std::string, const program_decl*> program_names;
    for (const auto& f : files_)
      for (const auto& prog : f->ast.programs) {
        auto [it, fresh] = program_names.emplace(prog.name, &prog);
        if (!fresh) {
          auto& d = diags_.error(prog.loc, "program '" + prog.name + "' is defined twice");
          d.notes.push_back({severity::note, it->second->loc, "first defined here", {}});
          if (diags_.full()) break;
          continue;
        }
        in.programs.push_back(&prog);
      }
    if (diags_.has_errors()) return fail();
    in.file_experts = main.experts ? &*main.experts : nullptr;
    for (const auto& [name, text] : req.set) {
      bool declared = false;
      for (const auto& p : decl->params) declared |= p.name == name;
      if (!declared) {
        std::string names;
        for (const auto& p : decl->params) names += (names.empty() ? "" : ", ") + p.name;
        return unexpected(errc::invalid_argument, req.path + ": --set " + name + ": schedule '" + decl->name +
                                                      "' has no parameter '" + name + "' (its parameters: " + names + ")");
      }
      std::int64_t v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || ptr != text.data() + text.size())
        return unexpected(errc::invalid_argument, req.path + ": --set " + name + "=" + text + ": the value must be an integer");
      in.params[name] = v;
    }
    auto s = evaluate(in, diags_);
    if (!s) return fail(errc::invalid_schedule);
    return std::move(*s);
  }

  diagnostic_list& diags() { return diags_; }

 private:
  unexpected fail(errc code = errc::parse_error) {
    return unexpected(to_error(sources_, diags_, diags_.hit_limit() ? errc::limit_exceeded : code));
  }

  source_set& sources_;
  const file_reader& read_;
  diagnostic_list diags_;
  std::vector<std::unique_ptr<parsed_file>> files_;
  std::vector<std::string> stack_, loaded_;
  std::size_t total_bytes_ = 0;
};

}  // namespace

expected<schedule::schedule> compile(source_set& sources, const compile_request& request, const file_reader& read) {
  // The main file is read first so that its own failure (missing, a directory, too large) is reported
  // plainly; the import machinery then gets its id instead of reading it again.
  auto id = read(sources, request.path);
  if (!id) return unexpected(id.error());
  const std::uint32_t main_id = *id;
  file_reader reuse = [&](source_set& src, const std::string& path) -> expected<std::uint32_t> {
    if (path == request.path) return main_id;
    return read(src, path);
  };
  compiler with_main(sources, reuse);
  with_main.load(request.path, {}, 0);
  return with_main.finish(request);
}

}  // namespace loom::dsl
