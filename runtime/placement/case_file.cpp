// Reading expert-load case files (see case_file.hpp). nlohmann's exceptions stop here.
#include "runtime/placement/case_file.hpp"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace loom::placement {

namespace {

using json = nlohmann::json;

constexpr std::uintmax_t max_file_bytes = std::uintmax_t{256} << 20;

std::string str(std::size_t v) { return std::to_string(v); }

std::string kind_of(const json& j) { return j.type_name(); }

class case_reader {
 public:
  explicit case_reader(std::string origin) : origin_(std::move(origin)) {}

  unexpected fail(const std::string& where, const std::string& what) const {
    return unexpected(errc::parse_error, origin_ + ": " + where + ": " + what);
  }

  expected<std::size_t> positive(const json& root, const char* key) const {
    if (!root.contains(key)) return fail(key, "missing (a positive integer is required)");
    const json& v = root[key];
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() ? v.get<std::uint64_t>() == 0 : v.get<std::int64_t>() < 1))
      return fail(key, "must be a positive integer, got " + v.dump());
    return static_cast<std::size_t>(v.get<std::uint64_t>());
  }

  expected<std::vector<std::vector<double>>> loads(const json& root) const {
    if (!root.contains("load"))
      return fail("load", "missing (an array of layers, each an array of expert loads)");
    const json& layers = root["load"];
    if (!layers.is_array() || layers.empty())
      return fail("load", "must be a non-empty array of layers, got " + kind_of(layers));
    std::vector<std::vector<double>> out;
    out.reserve(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const json& row = layers[l];
      const std::string where = "load[" + str(l) + "]";
      if (!row.is_array() || row.empty())
        return fail(where, "must be a non-empty array of expert loads, got " + kind_of(row));
      if (l > 0 && row.size() != layers[0].size())
        return fail(where, "has " + str(row.size()) + " experts, load[0] has " + str(layers[0].size()));
      std::vector<double>& loads = out.emplace_back();
      loads.reserve(row.size());
      for (std::size_t e = 0; e < row.size(); ++e) {
        const json& v = row[e];
        if (!v.is_number()) return fail(where + "[" + str(e) + "]", "must be a number, got " + kind_of(v));
        const double x = v.get<double>();
        if (!std::isfinite(x) || x < 0)
          return fail(where + "[" + str(e) + "]", "is " + v.dump() + "; loads must be >= 0");
        loads.push_back(x);
      }
    }
    return out;
  }

  expected<std::vector<std::vector<std::size_t>>> anchor_phy2log(const json& root, std::size_t layers,
                                                                 std::size_t slots,
                                                                 std::size_t experts) const {
    std::vector<std::vector<std::size_t>> out;
    if (!root.contains("anchor_phy2log")) return out;
    const json& all = root["anchor_phy2log"];
    if (!all.is_array() || all.size() != layers)
      return fail("anchor_phy2log", "must be an array of " + str(layers) + " layers like load");
    for (std::size_t l = 0; l < layers; ++l) {
      const json& row = all[l];
      const std::string where = "anchor_phy2log[" + str(l) + "]";
      if (!row.is_array() || row.size() != slots)
        return fail(where, "must be an array of num_replicas = " + str(slots) + " expert indices");
      std::vector<std::size_t>& p = out.emplace_back();
      for (std::size_t s = 0; s < slots; ++s) {
        const json& v = row[s];
        if (!v.is_number_integer() ||
            (v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() < 0) ||
            v.get<std::uint64_t>() >= experts)
          return fail(where + "[" + str(s) + "]",
                      "must be an expert index below " + str(experts) + ", got " + v.dump());
        p.push_back(static_cast<std::size_t>(v.get<std::uint64_t>()));
      }
    }
    return out;
  }

  expected<std::vector<double>> anchor_imbalance(const json& root, std::size_t layers) const {
    std::vector<double> out;
    if (!root.contains("anchor_imbalance")) return out;
    const json& all = root["anchor_imbalance"];
    if (!all.is_array() || all.size() != layers)
      return fail("anchor_imbalance", "must be an array of " + str(layers) + " numbers, one per layer");
    for (std::size_t l = 0; l < layers; ++l) {
      if (!all[l].is_number() || !std::isfinite(all[l].get<double>()) || all[l].get<double>() < 0)
        return fail("anchor_imbalance[" + str(l) + "]", "must be a number >= 0, got " + all[l].dump());
      out.push_back(all[l].get<double>());
    }
    return out;
  }

  expected<load_case> read(const json& root) const {
    if (!root.is_object()) return fail("top level", "must be a JSON object, got " + kind_of(root));
    load_case c;
    c.origin = origin_;
    auto slots = positive(root, "num_replicas");
    if (!slots) return forward_error(slots);
    auto groups = positive(root, "num_groups");
    if (!groups) return forward_error(groups);
    auto nodes = positive(root, "num_nodes");
    if (!nodes) return forward_error(nodes);
    auto gpus = positive(root, "num_gpus");
    if (!gpus) return forward_error(gpus);
    c.topo = topology{*slots, *groups, *nodes, *gpus};
    auto load = loads(root);
    if (!load) return forward_error(load);
    c.load = std::move(*load);
    if (auto ok = check_topology(c.num_experts(), c.topo); !ok)
      return unexpected(ok.error().code, origin_ + ": " + ok.error().message);
    auto phy = anchor_phy2log(root, c.load.size(), c.topo.num_slots, c.num_experts());
    if (!phy) return forward_error(phy);
    c.anchor_phy2log = std::move(*phy);
    auto imb = anchor_imbalance(root, c.load.size());
    if (!imb) return forward_error(imb);
    c.anchor_imbalance = std::move(*imb);
    return c;
  }

 private:
  std::string origin_;
};

// 1-based line and column of byte offset `pos` (nlohmann reports the byte after the error).
std::string position(std::string_view text, std::size_t pos) {
  pos = std::min(pos == 0 ? 0 : pos - 1, text.size());
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < pos; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return str(line) + ":" + str(col);
}

}  // namespace

expected<load_case> parse_load_case(std::string_view text, std::string origin) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    std::string why = e.what();
    if (auto p = why.find("] "); p != std::string::npos) why.erase(0, p + 2);
    if (why.rfind("parse error at line", 0) == 0)  // the position is given in front already
      if (auto p = why.find(": "); p != std::string::npos) why.erase(0, p + 2);
    return unexpected(errc::parse_error, origin + ":" + position(text, e.byte) + ": malformed JSON: " + why);
  } catch (const std::exception& e) {
    return unexpected(errc::parse_error, origin + ": cannot parse: " + e.what());
  }
  try {
    return case_reader(origin).read(root);
  } catch (const std::exception& e) {  // a type the checks above missed: report it, do not crash
    return unexpected(errc::parse_error, origin + ": unexpected content: " + e.what());
  }
}

expected<load_case> load_case_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return unexpected(errc::io_error, name + ": is a directory, not a case file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return unexpected(errc::io_error, name + ": cannot read: " + ec.message());
  if (size > max_file_bytes)
    return unexpected(errc::limit_exceeded,
                      name + ": " + std::to_string(size) + " bytes, above the 256 MiB limit");
  std::ifstream in(path, std::ios::binary);
  if (!in) return unexpected(errc::io_error, name + ": cannot open for reading");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return unexpected(errc::io_error, name + ": read failed");
  return parse_load_case(text.str(), name);
}

}  // namespace loom::placement
