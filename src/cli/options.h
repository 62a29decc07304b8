// Command-line parsing for the sampleattn program: `--name value` pairs and `--flag`s, with
// every option declared up front so that a typo is an error, not a silent default.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace sampleattn::cli {

class Options {
 public:
  // Declares an option taking a value, or a flag.
  void value(const std::string& name, const std::string& fallback, const std::string& help);
  void flag(const std::string& name, const std::string& help);

  // Parses argv[first..]; false with `error` set on unknown options or missing values.
  bool parse(int argc, char** argv, int first, std::string* error);

  // Replaces the value of an option as if given on the command line.
  void set(const std::string& name, const std::string& value) { given_[name] = value; }
  bool has(const std::string& name) const;  // given on the command line (flags: set)
  std::string get(const std::string& name) const;
  // Typed getters; false with `error` set when the text does not parse or is out of range.
  bool get_int(const std::string& name, int64_t lo, int64_t hi, int64_t* out, std::string* error) const;
  bool get_double(const std::string& name, double lo, double hi, double* out, std::string* error) const;
  // A comma-separated list of integers.
  bool get_int_list(const std::string& name, int64_t lo, int64_t hi, std::vector<int64_t>* out,
                    std::string* error) const;
  std::vector<std::string> get_list(const std::string& name) const;

  std::string usage() const;

 private:
  struct Spec {
    bool is_flag;
    std::string fallback;
    std::string help;
  };
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> given_;
};

}  // namespace sampleattn::cli
