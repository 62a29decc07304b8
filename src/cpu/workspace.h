// One CPU call's memory against the context's max_workspace_bytes (docs/SECURITY.md, Memory):
// the parts the call holds at one moment, added up and checked as one total before the part
// that would pass the limit is allocated.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace sampleattn::cpu {

struct WorkspaceParts {
  uint64_t pool_scratch = 0;    // every worker's scratch, as the pool holds it
  uint64_t input_scan = 0;      // per-chunk results of the input scan
  uint64_t sampling = 0;        // stage 1: sampled rows' statistics, column scores, task list
  uint64_t selection = 0;       // stage 2: per-worker temporaries
  uint64_t sparse_plan = 0;     // the per-head plans and the stripe lists chosen
  uint64_t attention = 0;       // the attention's task list and per-head stripe records
  uint64_t stripe_buffers = 0;  // packed stripe K/V
  uint64_t kv_exchange = 0;     // a sharded call's K/V rows in and out, and their tables

  // Saturating sums (a sum that does not fit is over any limit).
  uint64_t total() const { return add(pool_scratch, besides_pool()); }
  uint64_t besides_pool() const {
    return add(add(add(input_scan, sampling), add(selection, sparse_plan)),
               add(add(attention, stripe_buffers), kv_exchange));
  }
  // The bound on the pool's scratch while the other parts live (0 = no limit).
  uint64_t pool_limit(uint64_t limit) const {
    if (limit == 0) return 0;
    const uint64_t others = besides_pool();
    return others < limit ? limit - others : 1;  // 1: no scratch fits, yet "a limit"
  }

  static uint64_t add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
};

// OUT_OF_MEMORY naming every part when parts.total() passes limit (0 = no limit). `moment`
// says when, e.g. "during stage 1".
inline Status check_workspace(const WorkspaceParts& parts, uint64_t limit, const char* moment) {
  if (limit == 0 || parts.total() <= limit) return Status::ok();
  std::string text = "the call needs " + std::to_string(parts.total()) + " bytes of workspace " + moment + " (";
  bool first = true;
  auto part = [&](const char* name, uint64_t bytes) {
    if (bytes == 0) return;
    text += (first ? "" : " + ") + std::string(name) + " " + std::to_string(bytes);
    first = false;
  };
  part("pool scratch", parts.pool_scratch);
  part("input scan", parts.input_scan);
  part("stage-1 buffers", parts.sampling);
  part("stage-2 temporaries", parts.selection);
  part("sparse plan", parts.sparse_plan);
  part("attention tasks", parts.attention);
  part("stripe buffers", parts.stripe_buffers);
  part("K/V exchange", parts.kv_exchange);
  text += "), over the context's limit of " + std::to_string(limit) + " bytes";
  return out_of_memory(text);
}

}  // namespace sampleattn::cpu
