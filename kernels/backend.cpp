// Defaults of the optional Backend capabilities: a backend that cannot record says so clearly.
#include "kernels/backend.h"

#include <stdexcept>

namespace mlra {

void Backend::begin_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

std::unique_ptr<CapturedOps> Backend::end_capture() {
  throw std::logic_error("backend " + name() + " cannot record ops (supports_capture() is false)");
}

}  // namespace mlra
