// The chat template: how /v1/chat/completions turns a list of messages into one prompt. The
// release models are base models without one, so the format is ours and small: a JSON file
// named by the config key `chat_template`:
//   {"prefix": "",                                     optional, once at the start
//    "roles": {"system": "{content}\n\n",              one entry per accepted role; each holds
//              "user": "User: {content}\n",            "{content}" exactly once
//              "assistant": "Assistant: {content}\n"},
//    "generation_prompt": "Assistant:",                appended after the last message
//    "stop": ["\nUser:"]}                              optional, added to every request's stop
// Rendering is plain concatenation: prefix, each message through its role's pattern, then the
// generation prompt. A message with a role the template does not list is refused (400).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace mlra::http {

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplate {
  std::string prefix;
  std::map<std::string, std::string> roles;  // role -> pattern with "{content}"
  std::string generation_prompt;
  std::vector<std::string> stop;
};

// Throws std::runtime_error naming the file and what is wrong with it.
ChatTemplate parse_chat_template(const nlohmann::json& j);
ChatTemplate load_chat_template(const std::filesystem::path& file);

// Throws std::invalid_argument naming the first message whose role the template lacks.
std::string render_chat(const ChatTemplate& chat_template,
                        const std::vector<ChatMessage>& messages);

}  // namespace mlra::http
