#include "runtime/exec/experiment.hpp"

namespace loom::exec {

const char* to_string(backend_kind b) {
  switch (b) {
    case backend_kind::cpu: return "cpu";
    case backend_kind::timed: return "timed";
    case backend_kind::cuda: return "cuda";
  }
  return "?";
}

}  // namespace loom::exec
