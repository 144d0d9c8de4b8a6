// `loom devices`: the GPUs this build can use, or why there are none.
#include <iostream>

#include "apps/loom/commands.hpp"
#include "apps/loom/engine.hpp"
#include "kernels/gpu_probe.hpp"

namespace loom::app {

void add_devices_command(CLI::App& app, action& selected) {
  auto* cmd = app.add_subcommand("devices", engine_about("devices"));
  cmd->callback([&selected] {
    selected = [] {
      auto gpus = kernels::list_gpus();
      if (!gpus) {
        std::cout << "no GPU: " << gpus.error().message << "\n";
        return 0;
      }
      for (const auto& g : *gpus)
        std::cout << "gpu " << g.index << ": " << g.name << ", " << g.multiprocessors << " SMs, compute "
                  << g.compute_major << "." << g.compute_minor << ", " << (g.memory_bytes >> 20) << " MiB\n";
      return 0;
    };
  });
}

}  // namespace loom::app
