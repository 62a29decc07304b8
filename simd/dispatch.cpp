#include "simd/dispatch.h"

#include <atomic>
#include <cstdlib>

namespace sampleattn {
namespace {

constexpr int kNotForced = -1;
std::atomic<int> g_forced_isa{kNotForced};

}  // namespace

// Descending chain down the ISA list (best first, scalar last), starting at min(best supported, cap).
const KernelTable& automatic_kernel_table(const char* isa_cap) {
  Isa start = best_supported_isa();
  Isa cap;
  if (parse_isa(isa_cap, &cap) && cap < start) start = cap;
  for (int i = static_cast<int>(start); i >= 0; --i) {
    if (const KernelTable* t = kernel_table_for(static_cast<Isa>(i))) return *t;
  }
  return *compiled_kernel_table(Isa::kScalar);
}

const KernelTable* kernel_table_for(Isa isa) {
  if (!cpu_supports(isa)) return nullptr;
  return compiled_kernel_table(isa);
}

const KernelTable& active_kernel_table() {
  static const KernelTable* const automatic = &automatic_kernel_table(std::getenv("SAMPLEATTN_ISA"));
  const int forced = g_forced_isa.load(std::memory_order_acquire);
  if (forced != kNotForced) {
    if (const KernelTable* t = kernel_table_for(static_cast<Isa>(forced))) return *t;
  }
  return *automatic;
}

bool force_cpu_isa(Isa isa) {
  if (kernel_table_for(isa) == nullptr) return false;
  g_forced_isa.store(static_cast<int>(isa), std::memory_order_release);
  return true;
}

void clear_forced_isa() { g_forced_isa.store(kNotForced, std::memory_order_release); }

}  // namespace sampleattn
