// `loom plot FILE [--set NAME=VALUE]... [--cost ...|--components ...] -o OUT.svg [--trace OUT.json]`:
// the predicted timeline as a picture in the style of the DualPipe paper, and as a Chrome trace.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/schedule_options.hpp"
#include "runtime/report/chrome_trace.hpp"
#include "runtime/report/timeline.hpp"
#include "runtime/report/timeline_svg.hpp"
#include "runtime/sim/action_sim.hpp"
#include "runtime/sim/component_sim.hpp"

namespace loom::app {

namespace {

struct plot_options {
  schedule_options schedule;
  std::string cost = "F=1,B=2,W=1,FB=3";
  std::string components;
  std::string out;
  std::string trace;
  double width = 0;
};

int run_plot(const plot_options& o) {
  auto loaded = o.schedule.load();
  if (!loaded) return 1;
  const auto& s = loaded->sched;
  report::timeline t;
  std::string costs_text;
  if (o.components.empty()) {
    auto costs = sim::parse_action_costs(o.cost);
    if (!costs) {
      print_error(costs.error());
      return 2;
    }
    auto sim = sim::simulate_actions(s, *costs);
    costs_text = o.cost;
    t = report::make_timeline(s, sim.spans, "", "units");
  } else {
    auto costs = sim::parse_component_costs(o.components);
    if (!costs) {
      print_error(costs.error());
      return 2;
    }
    t = sim::simulate_components(s, *costs).picture;
    costs_text = "components " + o.components;
  }
  t.title = s.name + ", " + std::to_string(s.ranks()) + " ranks, " + std::to_string(s.total_microbatches()) +
            " microbatches (predicted, " + costs_text + ")";
  report::svg_options svg;
  svg.components = !o.components.empty();
  svg.width = o.width;
  if (!write_output(o.out, report::render_svg(t, svg))) return 1;
  if (!o.trace.empty() && !write_output(o.trace, report::chrome_trace(t, 1000.0).dump() + "\n")) return 1;
  if (o.out != "-") std::cerr << "loom: wrote " << o.out << (o.trace.empty() ? "" : " and " + o.trace) << "\n";
  return 0;
}

}  // namespace

void add_plot_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("plot", "Draw a schedule's predicted timeline (SVG) and write a Chrome trace");
  auto o = std::make_shared<plot_options>();
  o->schedule.add_to(*cmd);
  cmd->add_option("-o,--output", o->out, "SVG file to write ('-' for standard output)")->required();
  cmd->add_option("--trace", o->trace, "Also write a Chrome trace (JSON) of the prediction, for Perfetto");
  cmd->add_option("--cost", o->cost, "Action costs, e.g. F=1,B=2,W=1,FB=3")->capture_default_str();
  cmd->add_option("--components", o->components,
                  "Component costs for the component-level simulator (draws compute and comm sub-rows), e.g. "
                  "attn=1,mlp=1,dispatch=0.4,combine=0.4,dispatch.b=0.4,combine.b=0.4");
  cmd->add_option("--width", o->width, "Plot width in pixels (default: from the number of actions)");
  cmd->callback([&selected, o] { selected = [o] { return run_plot(*o); }; });
}

}  // namespace loom::app
