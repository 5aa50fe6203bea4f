// The kernels' A/B switches: environment variables that select an alternative path (benchmarks
// compare paths in one run; defaults are the measured winners). Each caller reads its switch once
// per process into a function-local static, so changing the environment later has no effect.
#pragma once

#include <cstdlib>
#include <string>

namespace mlra {

// The variable's value, "" when unset.
inline std::string env_value(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The variable as an integer; `fallback` when unset or empty (no range check: callers clamp).
inline long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

// An "n per SM" override in 1..16; 0 when unset or out of range (use the default).
inline int env_per_sm(const char* name) {
  const long v = env_long(name, 0);
  return v >= 1 && v <= 16 ? int(v) : 0;
}

}  // namespace mlra
