// Run-time selection of the CPU kernel table.
//
// The table in use is the best one the CPU supports, capped by the environment variable
// SAMPLEATTN_ISA (a name of the ISA list, e.g. avx2; read once), and overridden by
// force_cpu_isa() (the test hook). It is looked up at each call, so a forced ISA takes effect on
// existing contexts.
#pragma once

#include "simd/cpu_features.h"
#include "simd/kernels.h"

namespace sampleattn {

// The table for `isa`, or nullptr if this CPU cannot run it or it was not compiled in.
const KernelTable* kernel_table_for(Isa isa);

// The automatic choice for a given SAMPLEATTN_ISA value (nullptr or unknown text: no cap).
const KernelTable& automatic_kernel_table(const char* isa_cap);

// The table calls use now.
const KernelTable& active_kernel_table();

// Test hook: make every call use `isa`. Returns false (and changes nothing) when this CPU cannot
// run it. clear_forced_isa() returns to the automatic choice.
bool force_cpu_isa(Isa isa);
void clear_forced_isa();

}  // namespace sampleattn
