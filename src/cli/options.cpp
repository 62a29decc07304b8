#include "cli/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace sampleattn::cli {

void Options::value(const std::string& name, const std::string& fallback, const std::string& help) {
  specs_[name] = {false, fallback, help};
  order_.push_back(name);
}

void Options::flag(const std::string& name, const std::string& help) {
  specs_[name] = {true, "", help};
  order_.push_back(name);
}

bool Options::parse(int argc, char** argv, int first, std::string* error) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      *error = "unexpected argument '" + arg + "'";
      return false;
    }
    const size_t eq = arg.find('=');
    const bool inline_value = eq != std::string::npos;
    const std::string name(arg, 2, inline_value ? eq - 2 : std::string::npos);
    std::string text = inline_value ? std::string(arg, eq + 1) : std::string();
    auto it = specs_.find(name);
    if (it == specs_.end()) {
      *error = "unknown option --" + name;
      return false;
    }
    if (it->second.is_flag) {
      if (inline_value) {
        *error = "--" + name + " takes no value";
        return false;
      }
      given_.insert_or_assign(name, std::string(1, '1'));
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        *error = "--" + name + " needs a value";
        return false;
      }
      text = argv[++i];
    }
    given_[name] = text;
  }
  return true;
}

bool Options::has(const std::string& name) const { return given_.count(name) != 0; }

std::string Options::get(const std::string& name) const {
  auto g = given_.find(name);
  if (g != given_.end()) return g->second;
  auto s = specs_.find(name);
  return s == specs_.end() ? std::string() : s->second.fallback;
}

namespace {
bool parse_int(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}
}  // namespace

bool Options::get_int(const std::string& name, int64_t lo, int64_t hi, int64_t* out, std::string* error) const {
  int64_t v;
  if (!parse_int(get(name), &v) || v < lo || v > hi) {
    *error = "--" + name + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
             "], got '" + get(name) + "'";
    return false;
  }
  *out = v;
  return true;
}

bool Options::get_double(const std::string& name, double lo, double hi, double* out, std::string* error) const {
  const std::string text = get(name);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
    std::ostringstream m;
    m << "--" << name << " must be a number in [" << lo << ", " << hi << "], got '" << text << "'";
    *error = m.str();
    return false;
  }
  *out = v;
  return true;
}

std::vector<std::string> Options::get_list(const std::string& name) const {
  std::vector<std::string> out;
  std::stringstream ss(get(name));
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

bool Options::get_int_list(const std::string& name, int64_t lo, int64_t hi, std::vector<int64_t>* out,
                           std::string* error) const {
  out->clear();
  for (const std::string& item : get_list(name)) {
    int64_t v;
    if (!parse_int(item, &v) || v < lo || v > hi) {
      *error = "--" + name + " takes integers in [" + std::to_string(lo) + ", " + std::to_string(hi) +
               "], got '" + item + "'";
      return false;
    }
    out->push_back(v);
  }
  if (out->empty()) {
    *error = "--" + name + " needs at least one value";
    return false;
  }
  return true;
}

std::string Options::usage() const {
  std::ostringstream out;
  for (const std::string& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = "  --" + name + (s.is_flag ? "" : " <v>");
    if (left.size() < 26) left.resize(26, ' ');
    out << left << " " << s.help;
    if (!s.is_flag && !s.fallback.empty()) out << " (default " << s.fallback << ")";
    out << "\n";
  }
  return out.str();
}

}  // namespace sampleattn::cli
