// Header-only C++ wrapper over the C API (C++11 or later): a move-only RAII context, a value type
// for a call's parameters, and an exception type that carries the status. The C API stays the
// ABI; this header only adds convenience.
#ifndef SAMPLEATTN_SAMPLEATTN_HPP_
#define SAMPLEATTN_SAMPLEATTN_HPP_

#include <stdexcept>
#include <string>

#include "sampleattn/sampleattn.h"

namespace sampleattn {

class Error : public std::runtime_error {
 public:
  Error(sampleattn_status status, const std::string& message)
      : std::runtime_error(std::string(sampleattn_status_string(status)) + ": " + message), status_(status) {}
  sampleattn_status status() const noexcept { return status_; }

 private:
  sampleattn_status status_;
};

inline void check(sampleattn_status status) {
  if (status != SAMPLEATTN_SUCCESS) throw Error(status, sampleattn_last_error());
}

inline sampleattn_context_options default_context_options() {
  sampleattn_context_options o;
  sampleattn_context_options_init(&o);
  return o;
}

inline sampleattn_params default_params() {
  sampleattn_params p;
  sampleattn_params_init(&p);
  return p;
}

// The parameters of one call with their SampleAttention parameters inside, as one value: copies
// stay self-contained. It is a sampleattn_params whose `sample` pointer always points at the
// member `sample` below (which hides it), so `p.sample.alpha = 0.9f` works and a Params can be
// passed wherever a const sampleattn_params& or pointer is taken.
struct Params : sampleattn_params {
  sampleattn_sample_params sample;

  Params() {
    sampleattn_params& base = *this;
    sampleattn_params_init(&base);
    sampleattn_sample_params_init(&sample);
    link();
  }
  Params(const Params& other) : sampleattn_params(other), sample(other.sample) { link(); }
  Params& operator=(const Params& other) {
    static_cast<sampleattn_params&>(*this) = other;
    sample = other.sample;
    link();
    return *this;
  }

 private:
  void link() { sampleattn_params::sample = &sample; }
};

inline sampleattn_stats default_stats() {
  sampleattn_stats s;
  sampleattn_stats_init(&s);
  return s;
}

class Context {
 public:
  explicit Context(const sampleattn_context_options& options = default_context_options()) {
    check(sampleattn_context_create(&options, &handle_));
  }
  ~Context() { sampleattn_context_destroy(handle_); }
  Context(Context&& other) noexcept : handle_(other.handle_) { other.handle_ = nullptr; }
  Context& operator=(Context&& other) noexcept {
    if (this != &other) {
      sampleattn_context_destroy(handle_);
      handle_ = other.handle_;
      other.handle_ = nullptr;
    }
    return *this;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  sampleattn_context* get() const noexcept { return handle_; }

  sampleattn_context_info info() const {
    sampleattn_context_info i;
    sampleattn_context_info_init(&i);
    check(sampleattn_context_get_info(handle_, &i));
    return i;
  }

  sampleattn_plan_info plan(const sampleattn_params& params) const {
    sampleattn_plan_info i;
    sampleattn_plan_info_init(&i);
    check(sampleattn_plan(handle_, &params, &i));
    return i;
  }

  // Throws sampleattn::Error on failure. stats may be null.
  void forward(const sampleattn_params& params, sampleattn_stats* stats = nullptr) const {
    check(sampleattn_forward(handle_, &params, stats));
  }

 private:
  sampleattn_context* handle_ = nullptr;
};

}  // namespace sampleattn

#endif  // SAMPLEATTN_SAMPLEATTN_HPP_
