// One typed value of a config key, shared by the server config and the runner config parsers:
// a wrong JSON type or an integer outside the field's range is a ConfigError naming the key.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "models/model_config.h"

namespace mlra {

template <typename T>
T config_value(const std::string& key, const nlohmann::json& v) {
  const bool ok = [&] {
    if constexpr (std::is_same_v<T, bool>)
      return v.is_boolean();
    else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>)
      return v.is_number_unsigned();
    else if constexpr (std::is_integral_v<T>)
      return v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
      return v.is_number();
    else
      return v.is_string();
  }();
  if (!ok) throw ConfigError(fmt::format("config key '{}': wrong type ({})", key, v.dump()));
  if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T> && !std::is_same_v<T, bool>) {
    const auto x = v.get<uint64_t>();
    if (x > std::numeric_limits<T>::max())
      throw ConfigError(fmt::format("config key '{}': {} out of range", key, x));
    return static_cast<T>(x);
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max()))
      throw ConfigError(fmt::format("config key '{}': {} out of range", key, v.get<uint64_t>()));
    const auto x = v.get<int64_t>();
    if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max())
      throw ConfigError(fmt::format("config key '{}': {} out of range", key, x));
    return static_cast<T>(x);
  } else {
    return v.get<T>();
  }
}

}  // namespace mlra
