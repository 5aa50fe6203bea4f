// Prometheus text format reader: one pass over lines; comments other than # TYPE are skipped,
// every sample line must be `name[{label="value",...}] value [timestamp]` (header).
#include "server/prometheus_text.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include <strings.h>

#include <fmt/format.h>

namespace mlra {
namespace {

bool name_char(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

class LineParser {
 public:
  LineParser(std::string_view line, size_t number) : s_(line), number_(number) {}

  MetricSample sample() {
    MetricSample out;
    out.name = name();
    if (peek() == '{') labels(out.labels);
    skip_spaces(true);
    out.value = number();
    skip_spaces(false);
    if (pos_ < s_.size()) number();  // optional timestamp
    if (pos_ != s_.size()) fail("trailing characters");
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error(fmt::format("metrics line {}: {} in '{}'", number_, why, s_));
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c) {
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }
  void skip_spaces(bool required) {
    const size_t start = pos_;
    while (peek() == ' ' || peek() == '\t') ++pos_;
    if (required && pos_ == start) fail("expected a space");
  }
  std::string name() {
    const size_t start = pos_;
    while (pos_ < s_.size() && name_char(s_[pos_], pos_ == start)) ++pos_;
    if (pos_ == start) fail("expected a name");
    return std::string(s_.substr(start, pos_ - start));
  }
  void labels(std::map<std::string, std::string>& out) {
    expect('{');
    while (peek() != '}') {
      std::string key = name();
      expect('=');
      expect('"');
      std::string value;
      for (;;) {
        if (pos_ >= s_.size()) fail("unterminated label value");
        char c = s_[pos_++];
        if (c == '"') break;
        if (c == '\\') {
          if (pos_ >= s_.size()) fail("dangling escape");
          const char e = s_[pos_++];
          c = e == 'n' ? '\n' : e;
          if (e != 'n' && e != '\\' && e != '"') fail("bad escape");
        }
        value += c;
      }
      if (!out.emplace(std::move(key), std::move(value)).second) fail("duplicate label");
      if (peek() == ',')
        ++pos_;
      else if (peek() != '}')
        fail("expected ',' or '}'");
    }
    expect('}');
  }
  double number() {
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != ' ' && s_[pos_] != '\t') ++pos_;
    const std::string text(s_.substr(start, pos_ - start));
    // Prometheus parses these case-insensitively; prometheus-cpp writes "Nan".
    if (strcasecmp(text.c_str(), "+Inf") == 0 || strcasecmp(text.c_str(), "Inf") == 0) {
      return INFINITY;
    }
    if (strcasecmp(text.c_str(), "-Inf") == 0) return -INFINITY;
    if (strcasecmp(text.c_str(), "NaN") == 0) return NAN;
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size()) fail("bad number");
    return v;
  }

  std::string_view s_;
  size_t number_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<double> MetricsScrape::sum(std::string_view name,
                                         const std::map<std::string, std::string>& match) const {
  std::optional<double> total;
  for (const MetricSample& s : samples) {
    if (s.name != name) continue;
    bool ok = true;
    for (const auto& [k, v] : match) {
      auto it = s.labels.find(k);
      ok = ok && it != s.labels.end() && it->second == v;
    }
    if (ok) total = total.value_or(0) + s.value;
  }
  return total;
}

MetricsScrape parse_prometheus_text(std::string_view text) {
  MetricsScrape out;
  size_t number = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (line.front() == '#') {
      constexpr std::string_view kType = "# TYPE ";
      if (line.substr(0, kType.size()) == kType) {
        std::string_view rest = line.substr(kType.size());
        const size_t sp = rest.find(' ');
        if (sp == std::string_view::npos) {
          throw std::runtime_error(fmt::format("metrics line {}: TYPE without a type", number));
        }
        out.types[std::string(rest.substr(0, sp))] = std::string(rest.substr(sp + 1));
      }
      continue;
    }
    out.samples.push_back(LineParser(line, number).sample());
  }
  return out;
}

}  // namespace mlra
