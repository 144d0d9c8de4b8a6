#include "runtime/daemon/compare_page.hpp"

#include <nlohmann/json.hpp>
#include <cctype>

namespace loom::daemon {

namespace {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// JSON that can sit inside <script type="application/json">: no '<' (so no "</script>"), and the
// two line separators JavaScript once disliked escaped too.
std::string script_safe_json(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') out += "\\u003c";
    else if (s[i] == '>') out += "\\u003e";
    else if (s[i] == '&') out += "\\u0026";
    else if (s.compare(i, 3, "\xe2\x80\xa8") == 0) { out += "\\u2028"; i += 2; }
    else if (s.compare(i, 3, "\xe2\x80\xa9") == 0) { out += "\\u2029"; i += 2; }
    else out += s[i];
  }
  return out;
}

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// ".a{x}text{y}" -> "#s .a{x}#s text{y}" (the timeline renderer writes flat rules only).
std::string scope_css(const std::string& css, const std::string& scope) {
  std::string out;
  std::size_t pos = 0;
  while (pos < css.size()) {
    auto open = css.find('{', pos);
    auto close = css.find('}', open == std::string::npos ? pos : open);
    if (open == std::string::npos || close == std::string::npos) break;
    std::string selectors = css.substr(pos, open - pos), scoped;
    std::size_t s = 0;
    while (s <= selectors.size()) {
      auto comma = selectors.find(',', s);
      std::string one = selectors.substr(s, comma == std::string::npos ? std::string::npos : comma - s);
      if (!one.empty()) scoped += (scoped.empty() ? "" : ",") + ("#" + scope + " " + one);
      if (comma == std::string::npos) break;
      s = comma + 1;
    }
    out += scoped + css.substr(open, close - open + 1);
    pos = close + 1;
  }
  return out;
}

// Whether an SVG holds nothing that could run or fetch: no script, foreignObject or iframe element,
// no on...= handler, no javascript: URL, no href other than to a fragment.
bool plain_svg(const std::string& svg) {
  std::string s(svg.size(), ' ');
  for (std::size_t i = 0; i < svg.size(); ++i) s[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(svg[i])));
  for (const char* bad : {"<script", "< script", "<foreignobject", "<iframe", "javascript:", "<!entity", "<use"})
    if (s.find(bad) != std::string::npos) return false;
  auto space = [&](std::size_t i) { return std::isspace(static_cast<unsigned char>(s[i])) != 0; };
  for (std::size_t i = 1; i + 2 < s.size(); ++i) {
    if (s[i] == 'o' && s[i + 1] == 'n' && (space(i - 1) || s[i - 1] == '/')) {  // on...= attribute
      std::size_t j = i + 2;
      while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      while (j < s.size() && space(j)) ++j;
      if (j > i + 2 && j < s.size() && s[j] == '=') return false;
    }
    if (s.compare(i, 4, "href") == 0) {
      std::size_t j = i + 4;
      while (j < s.size() && space(j)) ++j;
      if (j < s.size() && s[j] == '=') {
        ++j;
        while (j < s.size() && space(j)) ++j;
        if (j < s.size() && (s[j] == '"' || s[j] == '\'')) ++j;
        if (j >= s.size() || s[j] != '#') return false;
      }
    }
  }
  return true;
}

const char* page_style = R"css(
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.loom-sub{color:#555;font-size:13px;margin-bottom:16px}
table.loom-t{border-collapse:collapse;font-size:13px}
table.loom-t th,table.loom-t td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
table.loom-t th{background:#f4f4f4}table.loom-t td.loom-l,table.loom-t th.loom-l{text-align:left}
.loom-bar{display:inline-block;height:10px;background:#4a7ab5;vertical-align:middle;margin-right:6px}
.loom-bar.loom-pred{background:#e0a030}
.loom-timelines{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.loom-timeline{border:1px solid #ddd;padding:8px;flex:1 1 420px;min-width:320px;overflow:auto}
.loom-timeline svg,.loom-timeline img{max-width:100%;height:auto}
.loom-timeline h3{font-size:14px;margin:0 0 6px}
.loom-err{color:#a00;white-space:pre-wrap;font-family:monospace;font-size:12px}
#loom-errors:empty{display:none}
)css";

// Builds the tables from the embedded data with DOM calls only (textContent, never innerHTML), so
// nothing in a report can become markup.
const char* page_script = R"js(
(function () {
  var data = JSON.parse(document.getElementById('loom-data').textContent);
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(v, d) { return (typeof v === 'number' && isFinite(v)) ? v.toFixed(d === undefined ? 2 : d) : '-'; }
  function pct(v) { return (typeof v === 'number' && isFinite(v)) ? (100 * v).toFixed(1) + '%' : '-'; }
  function mib(v) { return (typeof v === 'number' && isFinite(v)) ? (v / 1048576).toFixed(2) + ' MiB' : '-'; }
  function get(o, path) {
    for (var i = 0; i < path.length; i++) { if (o === null || o === undefined) return undefined; o = o[path[i]]; }
    return o;
  }
  function mean(a) {
    if (!a || !a.length) return undefined;
    var s = 0; for (var i = 0; i < a.length; i++) s += a[i]; return s / a.length;
  }
  function label(x) {
    var sched = get(x.report, ['schedule', 'name']);
    return '#' + x.id + ' ' + (x.name || '') + (sched ? ' \u00b7 ' + sched : '');
  }
  function table(id, head) {
    var t = el('table', 'loom-t'); t.id = id;
    var tr = el('tr');
    head.forEach(function (h, i) { tr.appendChild(el('th', i === 0 ? 'loom-l' : '', h)); });
    t.appendChild(tr);
    return t;
  }
  function bar(value, max, cls, text) {
    var td = el('td', 'loom-l');
    var b = el('span', 'loom-bar' + (cls ? ' ' + cls : ''));
    var w = (typeof value === 'number' && max > 0) ? Math.max(1, Math.round(240 * value / max)) : 0;
    b.style.width = w + 'px';
    td.appendChild(b); td.appendChild(document.createTextNode(text));
    return td;
  }
  var xs = data.experiments;
  xs.forEach(function (x) {
    var r = x.report || {};
    x.step_ms = mean((r.steps || []).map(function (s) { return s.wall_ms; }));
    x.bubble_measured = get(r, ['measured', 'bubble_ratio']);
    x.bubble_predicted = get(r, ['predicted', 'bubble_ratio']);
    x.makespan_measured = get(r, ['measured', 'makespan']);
    x.makespan_predicted = get(r, ['predicted', 'makespan']);
    x.peak = get(r, ['memory', 'peak_activation_bytes_max']);
    var loss = r.loss || [];
    x.loss = loss.length ? loss[loss.length - 1] : undefined;
  });

  var summary = document.getElementById('loom-summary');
  var t = table('loom-summary-table', ['experiment', 'status', 'schedule', 'ranks (pp x ep)', 'microbatches', 'steps',
    'step time (ms)', 'makespan measured (ms)', 'makespan predicted (ms)', 'bubble measured', 'bubble predicted',
    'peak activations', 'final loss']);
  xs.forEach(function (x) {
    var r = x.report || {}, tr = el('tr');
    tr.id = 'loom-row-' + x.id;
    tr.appendChild(el('td', 'loom-l', label(x)));
    tr.appendChild(el('td', 'loom-l', x.status));
    tr.appendChild(el('td', 'loom-l', get(r, ['schedule', 'name']) || '-'));
    var pp = get(r, ['experiment', 'parallel', 'pp']), ep = get(r, ['experiment', 'parallel', 'ep']);
    tr.appendChild(el('td', '', pp ? pp + ' x ' + ep : '-'));
    tr.appendChild(el('td', '', get(r, ['schedule', 'microbatches']) || '-'));
    tr.appendChild(el('td', '', (r.steps || []).length || '-'));
    tr.appendChild(el('td', '', num(x.step_ms)));
    tr.appendChild(el('td', '', num(x.makespan_measured)));
    tr.appendChild(el('td', '', num(x.makespan_predicted)));
    tr.appendChild(el('td', '', pct(x.bubble_measured)));
    tr.appendChild(el('td', '', pct(x.bubble_predicted)));
    tr.appendChild(el('td', '', mib(x.peak)));
    tr.appendChild(el('td', '', num(x.loss, 6)));
    t.appendChild(tr);
    if (x.error) {
      var er = el('tr'), td = el('td', 'loom-l loom-err', x.error);
      td.colSpan = 13; er.appendChild(td); t.appendChild(er);
    }
  });
  summary.appendChild(t);

  // Measured against predicted bubble, and step time, as bars on one scale per chart.
  var maxBubble = 0, maxStep = 0;
  xs.forEach(function (x) {
    maxBubble = Math.max(maxBubble, x.bubble_measured || 0, x.bubble_predicted || 0);
    maxStep = Math.max(maxStep, x.step_ms || 0, x.makespan_predicted || 0);
  });
  var bt = table('loom-bubble-table', ['experiment', 'bubble measured', 'bubble predicted', 'step time', 'makespan predicted']);
  xs.forEach(function (x) {
    var tr = el('tr');
    tr.appendChild(el('td', 'loom-l', label(x)));
    tr.appendChild(bar(x.bubble_measured, maxBubble, '', pct(x.bubble_measured)));
    tr.appendChild(bar(x.bubble_predicted, maxBubble, 'loom-pred', pct(x.bubble_predicted)));
    tr.appendChild(bar(x.step_ms, maxStep, '', num(x.step_ms) + ' ms'));
    tr.appendChild(bar(x.makespan_predicted, maxStep, 'loom-pred', num(x.makespan_predicted) + ' ms'));
    bt.appendChild(tr);
  });
  document.getElementById('loom-bubble').appendChild(bt);

  // Time per component: total ms per kind of op over all steps and ranks.
  var kinds = [];
  xs.forEach(function (x) {
    Object.keys(get(x.report, ['ops']) || {}).forEach(function (k) { if (kinds.indexOf(k) < 0) kinds.push(k); });
  });
  kinds.sort();
  var ct = table('loom-component-table', ['component'].concat(xs.map(label)));
  var maxOp = 0;
  xs.forEach(function (x) { kinds.forEach(function (k) { maxOp = Math.max(maxOp, get(x.report, ['ops', k, 'total_ms']) || 0); }); });
  kinds.forEach(function (k) {
    var tr = el('tr');
    tr.appendChild(el('td', 'loom-l', k));
    xs.forEach(function (x) {
      var v = get(x.report, ['ops', k, 'total_ms']);
      tr.appendChild(bar(v, maxOp, '', num(v) + ' ms'));
    });
    ct.appendChild(tr);
  });
  document.getElementById('loom-components').appendChild(ct);

  // Peak activation memory: the largest rank, then per pipeline rank.
  var maxPeak = 0;
  xs.forEach(function (x) { maxPeak = Math.max(maxPeak, x.peak || 0); });
  var mt = table('loom-memory-table', ['experiment', 'peak activations (largest rank)', 'per pipeline rank']);
  xs.forEach(function (x) {
    var tr = el('tr');
    tr.appendChild(el('td', 'loom-l', label(x)));
    tr.appendChild(bar(x.peak, maxPeak, '', mib(x.peak)));
    var per = get(x.report, ['memory', 'peak_activation_bytes']) || [];
    tr.appendChild(el('td', 'loom-l', per.map(mib).join(', ') || '-'));
    mt.appendChild(tr);
  });
  document.getElementById('loom-memory').appendChild(mt);

  var done = el('div', '', 'rendered ' + xs.length + ' experiments');
  done.id = 'loom-rendered';
  done.setAttribute('data-experiments', String(xs.length));
  done.style.display = 'none';
  document.body.appendChild(done);
})();
)js";

}  // namespace

std::string inline_svg(const std::string& svg, const std::string& scope_id) {
  auto start = svg.find("<svg");
  if (start == std::string::npos || !plain_svg(svg)) return {};
  std::string body = svg.substr(start);
  // Scope every stylesheet of the SVG to its own container: inline <style> is global in HTML.
  std::string out;
  std::size_t pos = 0;
  for (;;) {
    auto open = body.find("<style", pos);
    if (open == std::string::npos) break;
    auto gt = body.find('>', open);
    auto close = body.find("</style>", gt == std::string::npos ? open : gt);
    if (gt == std::string::npos || close == std::string::npos) return {};
    out += body.substr(pos, gt + 1 - pos) + scope_css(body.substr(gt + 1, close - gt - 1), scope_id) + "</style>";
    pos = close + 8;
  }
  return out + body.substr(pos);
}

std::string compare_page(const std::vector<compared_experiment>& experiments, const std::string& title) {
  nlohmann::json data;
  data["experiments"] = nlohmann::json::array();
  for (const auto& x : experiments) {
    nlohmann::json e = {{"id", x.info.id},         {"name", x.info.name},         {"status", x.info.status},
                        {"error", x.info.error},   {"file", x.info.file},         {"submitted_at", x.info.submitted_at},
                        {"started_at", x.info.started_at}, {"finished_at", x.info.finished_at}};
    auto report = nlohmann::json::parse(x.report_json, nullptr, false);
    e["report"] = report.is_discarded() ? nlohmann::json() : report;
    data["experiments"].push_back(std::move(e));
  }
  std::string ids;
  for (const auto& x : experiments) ids += (ids.empty() ? "" : ", ") + std::to_string(x.info.id);

  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  // No external resource of any kind: the policy forbids fetching, inline styles and script only.
  h += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'\">\n";
  h += "<title>" + html_escape(title) + "</title>\n<style>" + page_style + "</style>\n";
  // Errors of the script below land in the page, where a test (or a reader) sees them.
  h += "<script>window.onerror = function (msg, src, line, col) { var e = document.getElementById('loom-errors'); "
       "if (e) e.textContent += msg + ' (line ' + line + ':' + col + ')\\n'; };</script>\n";
  h += "</head>\n<body>\n";
  h += "<h1>" + html_escape(title) + "</h1>\n";
  h += "<div class=\"loom-sub\">experiments " + html_escape(ids) + "; times in milliseconds; bubble = idle share of the "
       "last step's makespan over all pipeline ranks</div>\n";
  h += "<pre id=\"loom-errors\" class=\"loom-err\"></pre>\n";
  h += "<h2>Summary</h2>\n<div id=\"loom-summary\"></div>\n";
  h += "<h2>Bubble and step time: measured vs predicted</h2>\n<div id=\"loom-bubble\"></div>\n";
  h += "<h2>Timelines (measured, last step)</h2>\n<div class=\"loom-timelines\">\n";
  for (const auto& x : experiments) {
    const std::string scope = "loom-tl-" + std::to_string(x.info.id);
    auto report = nlohmann::json::parse(x.report_json, nullptr, false);
    std::string sched;
    if (report.is_object()) {
      auto it = report.find("schedule");
      if (it != report.end() && it->is_object()) {
        auto n = it->find("name");
        if (n != it->end() && n->is_string()) sched = ", schedule " + n->get<std::string>();
      }
    }
    h += "<div class=\"loom-timeline\" id=\"" + scope + "\">\n<h3>experiment " + std::to_string(x.info.id) + ": " +
         html_escape(x.info.name + sched) + " (" + html_escape(x.info.status) + ")</h3>\n";
    if (x.timeline_svg.empty()) {
      h += "<div class=\"loom-err\">no timeline: " + html_escape(x.info.error.empty() ? "the run wrote none" : x.info.error) +
           "</div>\n";
    } else if (auto svg = inline_svg(x.timeline_svg, scope); !svg.empty()) {
      h += svg + "\n";
    } else {
      h += "<img alt=\"timeline of experiment " + std::to_string(x.info.id) + "\" src=\"data:image/svg+xml;base64," +
           base64(x.timeline_svg) + "\">\n";
    }
    h += "</div>\n";
  }
  h += "</div>\n";
  h += "<h2>Time per component (all steps, all ranks)</h2>\n<div id=\"loom-components\"></div>\n";
  h += "<h2>Peak activation memory</h2>\n<div id=\"loom-memory\"></div>\n";
  h += "<script type=\"application/json\" id=\"loom-data\">" + script_safe_json(data) + "</script>\n";
  h += std::string("<script>") + page_script + "</script>\n";
  h += "</body>\n</html>\n";
  return h;
}

}  // namespace loom::daemon
