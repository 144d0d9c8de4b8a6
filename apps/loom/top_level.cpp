#include "apps/loom/top_level.hpp"

#include <iostream>
#include <string>

#include "loom/version.hpp"

namespace loom::app {

void add_version_flag(CLI::App& app) {
  app.set_version_flag("--version", std::string("loom ") + loom::version + (loom::built_with_cuda ? " (cuda" : " (cpu only") +
                                        (loom::built_with_nccl ? ", nccl)" : ")"));
}

int parse_and_run(CLI::App& app, const action& selected, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!selected) {
    std::cout << app.help();
    return 0;
  }
  return selected();
}

}  // namespace loom::app
