// The one translation unit that includes toml.hpp (it is slow to compile).
#include "dsl/experiment_file.hpp"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "runtime/schedule/limits.hpp"

namespace loom::dsl {

namespace {

using toml_value = toml::basic_value<toml::discard_comments, std::map, std::vector>;

// Raised inside this file only, to carry a located message to the loader's edge.
struct experiment_error {
  std::string message;
};

[[noreturn]] void fail_at(const toml_value& v, const std::string& message, const std::string& hint = "") {
  throw experiment_error{toml::format_error("[error] " + message, v, hint.empty() ? message : hint)};
}

// The keys each table may hold; anything else is an error at its position.
void check_keys(const toml_value& table, const std::string& where, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : table.as_table()) {
    bool ok = false;
    for (const char* a : allowed) ok |= key == a;
    if (ok) continue;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    fail_at(value, "unknown key '" + key + "' in " + where, "expected one of: " + list);
  }
}

template <class T>
void read(const toml_value& table, const char* key, T& out) {
  if (!table.contains(key)) return;
  out = toml::get<T>(table.at(key));
}

void read_int(const toml_value& table, const char* key, int& out, int lo, int hi) {
  if (!table.contains(key)) return;
  const auto& v = table.at(key);
  auto n = toml::get<std::int64_t>(v);
  if (n < lo || n > hi) fail_at(v, std::string(key) + " = " + std::to_string(n) + " is out of range", "expected " + std::to_string(lo) + " to " + std::to_string(hi));
  out = static_cast<int>(n);
}

void read_float(const toml_value& table, const char* key, float& out, double lo, double hi) {
  if (!table.contains(key)) return;
  const auto& v = table.at(key);
  double d = v.is_integer() ? static_cast<double>(v.as_integer()) : toml::get<double>(v);
  if (!(d >= lo && d <= hi)) fail_at(v, std::string(key) + " is out of range", "expected " + std::to_string(lo) + " to " + std::to_string(hi));
  out = static_cast<float>(d);
}

void read_double(const toml_value& table, const char* key, double& out, double lo, double hi) {
  float f = static_cast<float>(out);
  read_float(table, key, f, lo, hi);
  if (table.contains(key)) {
    const auto& v = table.at(key);
    out = v.is_integer() ? static_cast<double>(v.as_integer()) : toml::get<double>(v);
  }
}

// Sets dotted.key = value in the document, creating tables on the way.
void apply_override(toml_value& doc, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw experiment_error{"--set '" + assignment + "': expected dotted.key=value"};
  std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  toml_value value;
  try {
    std::istringstream in("v = " + text);
    value = toml::parse<toml::discard_comments, std::map, std::vector>(in, "--set").at("v");
  } catch (const std::exception&) {
    value = toml_value(text);  // a bare word or path: a string
  }
  toml_value* table = &doc;
  std::size_t start = 0;
  for (;;) {
    auto dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw experiment_error{"--set '" + assignment + "': empty key part"};
    if (dot == std::string::npos) {
      table->as_table()[part] = value;
      return;
    }
    auto& tbl = table->as_table();
    if (!tbl.count(part)) tbl[part] = toml_value(toml::table{});
    if (!tbl[part].is_table()) throw experiment_error{"--set '" + assignment + "': '" + part + "' is not a table"};
    table = &tbl[part];
    start = dot + 1;
  }
}

exec::experiment convert(const toml_value& doc, const std::string& path, const std::string& base_dir) {
  exec::experiment e;
  e.path = path;
  e.dir = base_dir;
  check_keys(doc, "the experiment", {"name", "seed", "steps", "backend", "out", "watchdog_seconds", "cpu_threads", "model",
                                     "batch", "parallel", "schedule", "optimizer", "costs", "experts"});
  read(doc, "name", e.name);
  if (doc.contains("seed")) {
    auto s = toml::get<std::int64_t>(doc.at("seed"));
    if (s < 0) fail_at(doc.at("seed"), "seed must not be negative");
    e.seed = static_cast<std::uint64_t>(s);
  }
  read_int(doc, "steps", e.steps, 1, 1'000'000);
  read_double(doc, "watchdog_seconds", e.watchdog_seconds, 0.1, 86400);
  read_int(doc, "cpu_threads", e.cpu_threads, 0, 1024);
  if (doc.contains("backend")) {
    auto b = toml::get<std::string>(doc.at("backend"));
    if (b == "cpu") e.backend = exec::backend_kind::cpu;
    else if (b == "timed") e.backend = exec::backend_kind::timed;
    else if (b == "cuda") e.backend = exec::backend_kind::cuda;
    else fail_at(doc.at("backend"), "unknown backend '" + b + "'", "expected cpu, timed or cuda");
  }
  read(doc, "out", e.out_dir);

  if (doc.contains("model")) {
    const auto& m = doc.at("model");
    check_keys(m, "[model]", {"hidden", "heads", "layers", "experts", "top_k", "expert_ffn", "shared_ffn", "vocab",
                              "seq_len", "gating", "bias_update_rate", "norm_eps", "init_scale", "router_skew"});
    auto& c = e.model;
    read_int(m, "hidden", c.hidden, 1, 1 << 16);
    read_int(m, "heads", c.heads, 1, 1024);
    read_int(m, "layers", c.layers, 1, 4096);
    read_int(m, "experts", c.experts, 1, 1 << 16);
    read_int(m, "top_k", c.top_k, 1, 1 << 16);
    read_int(m, "expert_ffn", c.expert_ffn, 1, 1 << 18);
    read_int(m, "shared_ffn", c.shared_ffn, 0, 1 << 18);
    read_int(m, "vocab", c.vocab, 2, 1 << 20);
    read_int(m, "seq_len", c.seq_len, 1, 1 << 20);
    read_float(m, "bias_update_rate", c.bias_update_rate, 0, 1);
    read_float(m, "norm_eps", c.norm_eps, 1e-12, 1);
    read_float(m, "init_scale", c.init_scale, 1e-6, 10);
    read_float(m, "router_skew", c.router_skew, 0, 10);
    if (m.contains("gating")) {
      auto g = toml::get<std::string>(m.at("gating"));
      if (g == "softmax") c.gating = exec::gating_kind::softmax;
      else if (g == "sigmoid") c.gating = exec::gating_kind::sigmoid;
      else fail_at(m.at("gating"), "unknown gating '" + g + "'", "expected softmax or sigmoid");
    }
    if (c.hidden % c.heads != 0)
      fail_at(m.contains("heads") ? m.at("heads") : m, "hidden (" + std::to_string(c.hidden) + ") is not divisible by heads (" +
                                                           std::to_string(c.heads) + ")");
    if (c.top_k > c.experts)
      fail_at(m.at("top_k"), "top_k (" + std::to_string(c.top_k) + ") exceeds the number of experts (" + std::to_string(c.experts) + ")");
  }
  if (doc.contains("batch")) {
    const auto& b = doc.at("batch");
    check_keys(b, "[batch]", {"microbatch_size"});
    read_int(b, "microbatch_size", e.microbatch_size, 1, 1 << 20);
  }
  if (doc.contains("parallel")) {
    const auto& p = doc.at("parallel");
    check_keys(p, "[parallel]", {"pp", "ep"});
    read_int(p, "pp", e.pp, 1, schedule::limits::max_ranks);
    read_int(p, "ep", e.ep, 1, 1024);
    if (p.contains("ep") && e.model.experts % e.ep != 0)
      fail_at(p.at("ep"), "experts (" + std::to_string(e.model.experts) + ") are not divisible by ep (" + std::to_string(e.ep) + ")",
              "each rank of an expert-parallel group owns experts / ep experts");
    if (p.contains("ep") && e.microbatch_size % e.ep != 0)
      fail_at(p.at("ep"), "microbatch_size (" + std::to_string(e.microbatch_size) + ") is not divisible by ep (" +
                              std::to_string(e.ep) + ")", "each rank of an expert-parallel group takes microbatch_size / ep sequences");
  }
  if (!doc.contains("schedule")) throw experiment_error{path + ": the experiment has no [schedule] table (with file = \"...\")"};
  {
    const auto& s = doc.at("schedule");
    if (!s.is_table()) fail_at(s, "[schedule] must be a table");
    if (!s.contains("file")) fail_at(s, "[schedule] has no 'file'", "file = \"path/to/schedule.sched\"");
    auto file = toml::get<std::string>(s.at("file"));
    std::filesystem::path p(file);
    e.schedule_file = p.is_absolute() ? file : (std::filesystem::path(base_dir) / p).lexically_normal().string();
    for (const auto& [key, value] : s.as_table()) {
      if (key == "file") continue;
      if (!value.is_integer()) fail_at(value, "schedule parameter '" + key + "' must be an integer");
      e.schedule_params[key] = std::to_string(value.as_integer());
    }
    if (!e.schedule_params.count("ranks")) e.schedule_params["ranks"] = std::to_string(e.pp);
  }
  if (doc.contains("optimizer")) {
    const auto& o = doc.at("optimizer");
    check_keys(o, "[optimizer]", {"lr", "beta1", "beta2", "eps", "weight_decay"});
    read_float(o, "lr", e.optimizer.lr, 0, 10);
    read_float(o, "beta1", e.optimizer.beta1, 0, 1);
    read_float(o, "beta2", e.optimizer.beta2, 0, 1);
    read_float(o, "eps", e.optimizer.eps, 0, 1);
    read_float(o, "weight_decay", e.optimizer.weight_decay, 0, 10);
  }
  if (doc.contains("experts")) {
    const auto& x = doc.at("experts");
    check_keys(x, "[experts]", {"redundant", "replan_every", "window", "planner", "groups"});
    read_int(x, "redundant", e.experts.redundant, 0, 1 << 16);
    read_int(x, "replan_every", e.experts.replan_every, 0, 1 << 30);
    read_int(x, "window", e.experts.window, 1, 1 << 20);
    read_int(x, "groups", e.experts.groups, 1, 1 << 16);
    if (x.contains("planner")) {
      e.experts.planner = toml::get<std::string>(x.at("planner"));
      if (e.experts.planner != "hierarchical" && e.experts.planner != "global")
        fail_at(x.at("planner"), "unknown planner '" + e.experts.planner + "'", "expected hierarchical or global");
    }
    e.have_experts = true;
  }
  if (doc.contains("costs")) {
    const auto& c = doc.at("costs");
    check_keys(c, "[costs]", {"attn", "dispatch", "mlp", "combine", "attn_b", "attn_w", "mlp_b", "mlp_w", "dispatch_b",
                              "combine_b", "p2p", "sms", "comm_sms"});
    auto& k = e.costs;
    read_double(c, "attn", k.attn, 0, 1e6);
    read_double(c, "dispatch", k.dispatch, 0, 1e6);
    read_double(c, "mlp", k.mlp, 0, 1e6);
    read_double(c, "combine", k.combine, 0, 1e6);
    read_double(c, "attn_b", k.attn_b, 0, 1e6);
    read_double(c, "attn_w", k.attn_w, 0, 1e6);
    read_double(c, "mlp_b", k.mlp_b, 0, 1e6);
    read_double(c, "mlp_w", k.mlp_w, 0, 1e6);
    read_double(c, "dispatch_b", k.dispatch_b, 0, 1e6);
    read_double(c, "combine_b", k.combine_b, 0, 1e6);
    read_double(c, "p2p", k.p2p, 0, 1e6);
    read_int(c, "sms", k.sms_total, 2, 4096);
    read_int(c, "comm_sms", k.comm_sms, 1, 4095);
    e.have_costs = true;
  }
  if (e.out_dir.empty()) e.out_dir = "runs/" + e.name;
  return e;
}

}  // namespace

expected<exec::experiment> parse_experiment(const std::string& text, const std::string& path, const std::string& base_dir,
                                            const std::vector<std::string>& overrides) {
  try {
    std::istringstream in(text);
    auto doc = toml::parse<toml::discard_comments, std::map, std::vector>(in, path);
    for (const auto& o : overrides) apply_override(doc, o);
    return convert(doc, path, base_dir);
  } catch (const experiment_error& e) {
    return unexpected(errc::invalid_experiment, e.message);
  } catch (const toml::syntax_error& e) {
    return unexpected(errc::parse_error, e.what());
  } catch (const toml::type_error& e) {
    return unexpected(errc::invalid_experiment, e.what());
  } catch (const std::out_of_range& e) {
    return unexpected(errc::invalid_experiment, path + ": " + e.what());
  } catch (const std::exception& e) {
    return unexpected(errc::invalid_experiment, path + ": " + e.what());
  }
}

expected<exec::experiment> load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return unexpected(errc::io_error, path + ": is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return unexpected(errc::io_error, path + ": cannot open the experiment file");
  auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > schedule::limits::max_file_bytes)
    return unexpected(errc::limit_exceeded, path + ": the experiment file is over " +
                                                std::to_string(schedule::limits::max_file_bytes) + " bytes");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string base = std::filesystem::path(path).parent_path().string();
  if (base.empty()) base = ".";
  return parse_experiment(ss.str(), path, base, overrides);
}

}  // namespace loom::dsl
