#include "runtime/report/timeline_svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <string_view>

namespace loom::report {

namespace {

// Length of the valid UTF-8 sequence at text[i] that is an XML character, or 0.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  auto at = [&](std::size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0u; };
  const unsigned lead = at(0);
  std::size_t len = lead >= 0xC2 && lead <= 0xDF ? 2 : lead >= 0xE0 && lead <= 0xEF ? 3 : lead >= 0xF0 && lead <= 0xF4 ? 4 : 0;
  if (len == 0) return 0;
  for (std::size_t k = 1; k < len; ++k)
    if (at(k) < 0x80 || at(k) > 0xBF) return 0;
  const unsigned second = at(1);
  if ((lead == 0xE0 && second < 0xA0) || (lead == 0xED && second > 0x9F) || (lead == 0xF0 && second < 0x90) ||
      (lead == 0xF4 && second > 0x8F))
    return 0;  // overlong, surrogate or beyond U+10FFFF
  if (lead == 0xEF && second == 0xBF && (at(2) == 0xBE || at(2) == 0xBF)) return 0;  // U+FFFE, U+FFFF
  return len;
}

}  // namespace

std::string xml_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t len = utf8_length(text, i);
      if (len == 0) {
        out += '?';
        ++i;
      } else {
        out.append(text.substr(i, len));
        i += len;
      }
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      case '\t': case '\n': case '\r': out += ' '; break;
      default: out += c < 0x20 ? '?' : static_cast<char>(c);
    }
    ++i;
  }
  return out;
}

namespace {

// A coordinate or time as short, locale-independent text: at most two decimals, no trailing zeros.
std::string num(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f", std::isfinite(v) ? v : 0.0);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

// Fill colors, [kind F B I W][shade: pipeline 0, pipeline 1].
constexpr const char* kind_fill[4][2] = {
    {"#F28E2B", "#FBCB92"},  // forward: orange
    {"#3B9A68", "#A6D8B9"},  // backward: green
    {"#3F7FCF", "#AECBF0"},  // backward for inputs: blue
    {"#8A5CC7", "#D4C3EE"},  // backward for weights: purple
};
constexpr const char* kind_name[4] = {"Forward", "Backward", "Backward for inputs", "Backward for weights"};

// Component spans: attn, mlp, dispatch, combine, anything else; [part][f side, b side].
constexpr const char* part_fill[5][2] = {
    {"#4E79A7", "#A0BCD8"}, {"#59A14F", "#AFD3A9"}, {"#E8A33D", "#F5D29E"}, {"#E15759", "#F2ABAC"}, {"#9D9D9D", "#D0D0D0"}};
constexpr const char* part_name[5] = {"attn", "mlp", "dispatch", "combine", "other"};

int kind_index(schedule::phase p) { return static_cast<int>(p); }
int shade_of(int pipeline) { return pipeline < 0 ? 0 : pipeline % 2; }
std::string kind_class(int kind, int shade) { return "k" + std::to_string(kind) + std::to_string(shade); }
std::string part_class(int part, int shade) { return "p" + std::to_string(part) + std::to_string(shade); }

// "f.attn" -> (attn, f side); "b.mlp.w" -> (mlp, b side); unknown parts are "other".
std::pair<int, int> classify_component(std::string_view name) {
  const std::size_t dot = name.find('.');
  const std::string_view side = name.substr(0, dot);
  std::string_view part = dot == std::string_view::npos ? name : name.substr(dot + 1);
  part = part.substr(0, part.find('.'));
  int p = 4;
  for (int i = 0; i < 4; ++i)
    if (part == part_name[i]) p = i;
  return {p, side == "b" ? 1 : 0};
}

// Ticks at 1, 2 or 5 times a power of ten, about `target` of them.
double nice_step(double span, double target) {
  const double raw = span / std::max(target, 1.0);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

struct layout {
  int rows = 0;
  bool by_ep = false;
  bool components = false;
  double makespan = 1, ppu = 1;
  double left = 0, top = 64, plot_w = 0;
  double row_h = 26, sub_h = 0, gap = 6, block = 0;
  double font = 12;  // of the numbers in cells
  double width = 0, axis_y = 0, legend_y = 0, height = 0;

  double x(double t) const { return left + t * ppu; }
  double row_y(int row) const { return top + row * block; }
  double rows_bottom() const { return top + rows * block - gap; }
};

int row_of(const layout& L, const timeline& t, const timeline_event& e) {
  return L.by_ep ? e.rank * t.ep + e.ep : e.rank;
}

std::string row_label(const layout& L, const timeline& t, int row) {
  if (!L.by_ep) return "Device " + std::to_string(row);
  return "Rank " + std::to_string(row / t.ep) + " / ep " + std::to_string(row % t.ep);
}

bool event_usable(const timeline& t, const timeline_event& e, bool by_ep) {
  return e.rank >= 0 && e.ep >= 0 && (!by_ep || e.ep < t.ep) && std::isfinite(e.start) && std::isfinite(e.end) &&
         e.end >= e.start;
}

layout make_layout(const timeline& t, const svg_options& opt) {
  layout L;
  L.by_ep = t.ep > 1 && std::any_of(t.events.begin(), t.events.end(), [](const auto& e) { return e.ep != 0; });
  int ranks = std::max(t.ranks, 0);
  double shortest = 0, end = 0;
  for (const auto& e : t.events) {
    if (!event_usable(t, e, L.by_ep)) continue;
    ranks = std::max(ranks, e.rank + 1);
    end = std::max(end, e.end);
    if (e.end > e.start) shortest = shortest == 0 ? e.end - e.start : std::min(shortest, e.end - e.start);
    if (opt.components && !e.components.empty()) L.components = true;
    for (const auto& c : e.components) end = std::max(end, std::isfinite(c.end) ? c.end : 0.0);
  }
  L.rows = std::max(1, L.by_ep ? ranks * t.ep : ranks);
  L.makespan = end > 0 ? end : 1;
  L.plot_w = opt.width > 0 ? opt.width
                           : std::clamp(L.makespan * 20 / (shortest > 0 ? shortest : L.makespan), 720.0, 2400.0);
  L.ppu = L.plot_w / L.makespan;
  L.row_h = opt.row_height > 0 ? opt.row_height : L.rows <= 16 ? 26 : L.rows <= 32 ? 20 : 14;
  L.font = std::clamp(L.row_h * 0.5, 7.0, 12.0);
  L.sub_h = L.components ? std::max(4.0, std::round(L.row_h * 0.3)) : 0;
  L.gap = std::max(3.0, std::round(L.row_h * (L.components ? 0.45 : 0.25)));
  L.block = L.row_h + (L.components ? 2 * L.sub_h + 3 : 0) + L.gap;
  const std::size_t label_chars = row_label(L, t, L.rows - 1).size();
  L.left = 24 + 7.2 * static_cast<double>(label_chars);
  L.width = L.left + L.plot_w + 28;
  L.axis_y = L.rows_bottom() + 6;
  L.legend_y = L.axis_y + 56;
  return L;
}

// Appends SVG elements to a string.
class svg_out {
 public:
  std::string text;

  void rect(double x, double y, double w, double h, const std::string& cls) {
    text += "<rect class=\"" + cls + "\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(std::max(w, 0.0)) +
            "\" height=\"" + num(h) + "\"/>";
  }
  void line(double x1, double y1, double x2, double y2, const std::string& cls) {
    text += "<line class=\"" + cls + "\" x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
            num(y2) + "\"/>";
  }
  void label(double x, double y, const std::string& cls, std::string_view content) {
    text += "<text class=\"" + cls + "\" x=\"" + num(x) + "\" y=\"" + num(y) + "\">" + xml_escape(content) + "</text>";
  }
  void raw(std::string_view s) { text += s; }
};

std::string stylesheet(const layout& L) {
  std::string css =
      ".bg{fill:#fff}text{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif}"
      ".title{font-size:17px;font-weight:bold;fill:#1a1a1a}.sub{font-size:12px;fill:#555}"
      ".lab{font-size:12px;fill:#333;text-anchor:end}.sublab{font-size:8px;fill:#777;text-anchor:end}"
      ".tick{font-size:11px;fill:#444;text-anchor:middle}.leg{font-size:12px;fill:#333}"
      ".band{fill:#fff;stroke:#d9d9d9;stroke-width:1}.subband{fill:#fbfbfb;stroke:#ececec;stroke-width:0.6}"
      ".grid{stroke:#ececec;stroke-width:1}.axis{stroke:#666;stroke-width:1}"
      ".ev rect,.sw{stroke:#fff;stroke-width:0.8}.cp{stroke:#fff;stroke-width:0.4}"
      ".ev .pair,.swpair{fill:none;stroke:#1a1a1a;stroke-width:2}.idle{fill:#fff;stroke:#bdbdbd;stroke-width:1}"
      ".n{font-size:" + num(L.font) + "px;fill:#1a1a1a;text-anchor:middle}";
  for (int k = 0; k < 4; ++k)
    for (int s = 0; s < 2; ++s) css += "." + kind_class(k, s) + "{fill:" + kind_fill[k][s] + "}";
  for (int p = 0; p < 5; ++p)
    for (int s = 0; s < 2; ++s) css += "." + part_class(p, s) + "{fill:" + part_fill[p][s] + "}";
  return css;
}

void draw_header(svg_out& o, const timeline& t, const layout& L) {
  o.label(L.left, 28, "title", t.title.empty() ? "pipeline timeline" : t.title);
  double busy = 0;
  for (const auto& e : t.events)
    if (event_usable(t, e, L.by_ep)) busy += e.end - e.start;
  const double idle = 1 - busy / (L.makespan * L.rows);
  o.label(L.left, 48, "sub",
          "makespan " + num(L.makespan) + " " + t.unit + " \u00b7 " + std::to_string(t.events.size()) +
              " actions \u00b7 idle " + num(std::max(idle, 0.0) * 100) + "%");
}

void draw_rows(svg_out& o, const timeline& t, const layout& L) {
  for (int r = 0; r < L.rows; ++r) {
    const double y = L.row_y(r);
    o.rect(L.left, y, L.plot_w, L.row_h, "band");
    o.label(L.left - 10, y + L.row_h / 2 + 4, "lab", row_label(L, t, r));
    if (!L.components) continue;
    for (int s = 0; s < 2; ++s) {
      const double sy = y + L.row_h + 1.5 + s * (L.sub_h + 1);
      o.rect(L.left, sy, L.plot_w, L.sub_h, "subband");
      o.label(L.left - 10, sy + L.sub_h / 2 + 3, "sublab", s == 0 ? "compute" : "comm");
    }
  }
}

void draw_grid_and_axis(svg_out& o, const timeline& t, const layout& L) {
  const double step = nice_step(L.makespan, L.plot_w / 70);
  const double bottom = L.rows_bottom();
  o.line(L.left, L.axis_y, L.left + L.plot_w, L.axis_y, "axis");
  for (int i = 0;; ++i) {
    const double v = i * step;
    if (v > L.makespan + step * 1e-9) break;
    const double x = L.x(v);
    o.line(x, L.top, x, bottom, "grid");
    o.line(x, L.axis_y, x, L.axis_y + 5, "axis");
    o.label(x, L.axis_y + 18, "tick", num(v));
  }
  o.label(L.left + L.plot_w / 2, L.axis_y + 36, "tick", "time (" + t.unit + ")");
}

// The microbatch number centered in [x, x + w] when it fits.
void draw_number(svg_out& o, const layout& L, double x, double w, double y, int microbatch) {
  const std::string digits = std::to_string(microbatch);
  if (w < static_cast<double>(digits.size()) * L.font * 0.62 + 3 || L.row_h < 9) return;
  o.label(x + w / 2, y + L.row_h / 2 + L.font * 0.36, "n", digits);
}

std::string tooltip(const timeline& t, const timeline_event& e) {
  std::string s = schedule::to_string(e.action) + " \u00b7 rank " + std::to_string(e.rank);
  if (t.ep > 1) s += " ep " + std::to_string(e.ep);
  return s + " \u00b7 " + num(e.start) + " to " + num(e.end) + " " + t.unit;
}

void draw_components(svg_out& o, const layout& L, const timeline_event& e, double y) {
  for (const auto& c : e.components) {
    if (!std::isfinite(c.start) || !std::isfinite(c.end) || c.end < c.start) continue;
    const auto [part, side] = classify_component(c.name);
    const double sy = y + L.row_h + 1.5 + (c.comm ? L.sub_h + 1 : 0);
    o.rect(L.x(c.start), sy, (c.end - c.start) * L.ppu, L.sub_h, "cp " + part_class(part, side));
  }
}

void draw_event(svg_out& o, const timeline& t, const layout& L, const timeline_event& e, const svg_options& opt) {
  const double x0 = L.x(e.start), w = (e.end - e.start) * L.ppu, y = L.row_y(row_of(L, t, e));
  const auto& a = e.action;
  o.raw("<g class=\"ev\">");
  if (opt.tooltips) o.raw("<title>" + xml_escape(tooltip(t, e)) + "</title>");
  const int k1 = kind_index(a.first.kind), s1 = shade_of(e.pipeline_first);
  if (!a.second) {
    o.rect(x0, y, w, L.row_h, kind_class(k1, s1));
    if (opt.numbers) draw_number(o, L, x0, w, y, a.first.microbatch);
  } else {
    const int k2 = kind_index(a.second->kind), s2 = shade_of(e.pipeline_second);
    o.rect(x0, y, w / 2, L.row_h, kind_class(k1, s1));
    o.rect(x0 + w / 2, y, w / 2, L.row_h, kind_class(k2, s2));
    if (opt.numbers) {
      draw_number(o, L, x0, w / 2, y, a.first.microbatch);
      draw_number(o, L, x0 + w / 2, w / 2, y, a.second->microbatch);
    }
    o.rect(x0 + 1, y + 1, std::max(w - 2, 0.0), L.row_h - 2, "pair");
  }
  if (L.components) draw_components(o, L, e, y);
  o.raw("</g>");
}

// Usable events by (row, start, end): the picture does not depend on the order of t.events.
std::vector<const timeline_event*> drawing_order(const timeline& t, const layout& L) {
  std::vector<const timeline_event*> order;
  for (const auto& e : t.events)
    if (event_usable(t, e, L.by_ep)) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [&](const timeline_event* a, const timeline_event* b) {
    const int ra = row_of(L, t, *a), rb = row_of(L, t, *b);
    return ra != rb ? ra < rb : a->start != b->start ? a->start < b->start : a->end < b->end;
  });
  return order;
}

struct legend_item {
  std::vector<std::string> fills;  // swatch parts, left to right
  enum { cells, idle, text } shape = cells;
  bool framed = false;
  std::string label;
  bool new_line = false;  // starts a line of its own
};

// "a" for pipelines drawn in shade 0 of a two-pipeline timeline; "a, c" with more.
std::string pipelines_in_shade(const timeline& t, int shade) {
  std::string names;
  for (std::size_t p = static_cast<std::size_t>(shade); p < std::max<std::size_t>(t.pipelines.size(), 2); p += 2)
    names += (names.empty() ? "" : ", ") + (p < t.pipelines.size() ? t.pipelines[p] : std::to_string(p));
  return names;
}

std::vector<legend_item> legend_items(const timeline& t, const layout& L) {
  std::set<std::pair<int, int>> kinds;  // (kind, shade)
  std::set<std::pair<int, int>> parts;  // (part, side)
  std::vector<std::string> pair_fills;  // the first pair drawn
  for (const timeline_event* e : drawing_order(t, L)) {
    const auto& a = e->action;
    kinds.insert({kind_index(a.first.kind), shade_of(e->pipeline_first)});
    if (a.second) {
      kinds.insert({kind_index(a.second->kind), shade_of(e->pipeline_second)});
      if (pair_fills.empty())
        pair_fills = {kind_class(kind_index(a.first.kind), shade_of(e->pipeline_first)),
                      kind_class(kind_index(a.second->kind), shade_of(e->pipeline_second))};
    }
    if (L.components)
      for (const auto& c : e->components) parts.insert(classify_component(c.name));
  }
  std::set<int> shades;
  for (const auto& [k, s] : kinds) shades.insert(s);
  std::vector<legend_item> items;
  for (int k = 0; k < 4; ++k) {
    legend_item item{{}, legend_item::cells, false, kind_name[k]};
    for (int s = 0; s < 2; ++s)
      if (kinds.count({k, s})) item.fills.push_back(kind_class(k, s));
    if (!item.fills.empty()) items.push_back(item);
  }
  if (!pair_fills.empty()) items.push_back({pair_fills, legend_item::cells, true, "Overlapped pair"});
  items.push_back({{}, legend_item::idle, false, "Idle"});
  if (shades.size() > 1)
    items.push_back({{}, legend_item::text, false,
                     "dark: pipeline " + pipelines_in_shade(t, 0) + " \u00b7 light: pipeline " +
                         pipelines_in_shade(t, 1)});
  if (!parts.empty()) items.push_back({{}, legend_item::text, false, "Streams:", true});
  for (const auto& [p, side] : parts)
    items.push_back({{part_class(p, side)}, legend_item::cells, false, std::string(side ? "b." : "f.") + part_name[p]});
  return items;
}

// Lays the legend out in lines within the plot width; returns its height.
double draw_legend(svg_out* o, const std::vector<legend_item>& items, const layout& L) {
  constexpr double sw_w = 28, sw_h = 14, line_h = 24;
  const double right = L.left + std::max(L.plot_w, 480.0);
  double x = L.left, y = L.legend_y;
  for (const auto& item : items) {
    const double swatch = item.shape == legend_item::text ? 0 : sw_w + 8;
    const double w = swatch + 6.8 * static_cast<double>(item.label.size()) + 26;
    if (x > L.left && (item.new_line || x + w > right)) {
      x = L.left;
      y += line_h;
    }
    if (o) {
      if (item.shape == legend_item::idle) o->rect(x, y, sw_w, sw_h, "idle");
      const double part = sw_w / static_cast<double>(std::max<std::size_t>(item.fills.size(), 1));
      for (std::size_t i = 0; i < item.fills.size(); ++i)
        o->rect(x + part * static_cast<double>(i), y, part, sw_h, "sw " + item.fills[i]);
      if (item.framed) o->rect(x + 1, y + 1, sw_w - 2, sw_h - 2, "swpair");
      o->label(x + swatch, y + sw_h - 2, item.shape == legend_item::text ? "sub" : "leg", item.label);
    }
    x += w;
  }
  return y + line_h - L.legend_y;
}

}  // namespace

std::string render_svg(const timeline& t, const svg_options& opt) {
  layout L = make_layout(t, opt);
  const auto items = legend_items(t, L);
  L.height = L.legend_y + draw_legend(nullptr, items, L) + 8;
  L.width = std::max(L.width, L.left + 480 + 28);

  svg_out o;
  o.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  o.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(L.width) + "\" height=\"" +
        num(L.height) + "\" viewBox=\"0 0 " + num(L.width) + " " + num(L.height) + "\">\n");
  o.raw("<title>" + xml_escape(t.title) + "</title>\n");
  o.raw("<style type=\"text/css\">" + stylesheet(L) + "</style>\n");
  o.rect(0, 0, L.width, L.height, "bg");
  o.raw("\n");
  draw_header(o, t, L);
  o.raw("\n");
  draw_rows(o, t, L);
  o.raw("\n");
  draw_grid_and_axis(o, t, L);
  o.raw("\n");
  for (const timeline_event* e : drawing_order(t, L)) {
    draw_event(o, t, L, *e, opt);
    o.raw("\n");
  }
  draw_legend(&o, items, L);
  o.raw("\n</svg>\n");
  return std::move(o.text);
}

}  // namespace loom::report
