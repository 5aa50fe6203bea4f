// Chat template: JSON -> ChatTemplate with every check the header promises; render by
// substitution of the one "{content}" placeholder.
#include "server/http/chat_template.h"

#include <fstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace mlra::http {
namespace {

constexpr std::string_view kContent = "{content}";

std::string string_field(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return "";
  if (!j[key].is_string()) throw std::runtime_error(fmt::format("'{}' must be a string", key));
  return j[key].get<std::string>();
}

}  // namespace

ChatTemplate parse_chat_template(const nlohmann::json& j) {
  if (!j.is_object()) throw std::runtime_error("a chat template is a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key != "prefix" && key != "roles" && key != "generation_prompt" && key != "stop") {
      throw std::runtime_error(fmt::format("unknown key '{}'", key));
    }
  }
  ChatTemplate t;
  t.prefix = string_field(j, "prefix");
  t.generation_prompt = string_field(j, "generation_prompt");
  if (!j.contains("roles") || !j["roles"].is_object() || j["roles"].empty()) {
    throw std::runtime_error("'roles' must be an object with at least one role");
  }
  for (const auto& [role, pattern] : j["roles"].items()) {
    if (!pattern.is_string())
      throw std::runtime_error(fmt::format("role '{}': not a string", role));
    const std::string p = pattern.get<std::string>();
    const size_t at = p.find(kContent);
    if (at == std::string::npos || p.find(kContent, at + 1) != std::string::npos) {
      throw std::runtime_error(
          fmt::format("role '{}': the pattern must hold {{content}} once", role));
    }
    t.roles[role] = p;
  }
  if (j.contains("stop")) {
    if (!j["stop"].is_array()) throw std::runtime_error("'stop' must be a list of strings");
    for (const auto& s : j["stop"]) {
      if (!s.is_string() || s.get<std::string>().empty()) {
        throw std::runtime_error("'stop' must be a list of non-empty strings");
      }
      t.stop.push_back(s.get<std::string>());
    }
  }
  return t;
}

ChatTemplate load_chat_template(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(fmt::format("chat template {}: cannot open", file.string()));
  try {
    return parse_chat_template(nlohmann::json::parse(in));
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("chat template {}: {}", file.string(), e.what()));
  }
}

std::string render_chat(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  std::string out = t.prefix;
  for (size_t i = 0; i < messages.size(); ++i) {
    auto it = t.roles.find(messages[i].role);
    if (it == t.roles.end()) {
      throw std::invalid_argument(
          fmt::format("messages[{}]: role '{}' is not in the chat template", i, messages[i].role));
    }
    const std::string& p = it->second;
    const size_t at = p.find(kContent);
    out.append(p, 0, at);
    out += messages[i].content;
    out.append(p, at + kContent.size());
  }
  return out + t.generation_prompt;
}

}  // namespace mlra::http
