// The CPU kernel tables' ISAs, expanded from the one list in cmake/KernelLists.cmake
// (SAMPLEATTN_FOR_EACH_ISA in the generated kernel_lists.h).
#pragma once

#include "kernel_lists.h"

namespace sampleattn {

// Ascending order of capability; the dispatch chain walks it downwards. kScalar is 0.
enum class Isa : int {
#define SAMPLEATTN_ISA_ENUMERATOR(name, Enum) Enum,
  SAMPLEATTN_FOR_EACH_ISA(SAMPLEATTN_ISA_ENUMERATOR)
#undef SAMPLEATTN_ISA_ENUMERATOR
};
static_assert(static_cast<int>(Isa::kScalar) == 0, "scalar must come first in SAMPLEATTN_ISAS");

// Every ISA, in the order of the enum (for loops, tests and benchmarks).
inline constexpr Isa kAllIsas[] = {
#define SAMPLEATTN_ISA_ELEMENT(name, Enum) Isa::Enum,
    SAMPLEATTN_FOR_EACH_ISA(SAMPLEATTN_ISA_ELEMENT)
#undef SAMPLEATTN_ISA_ELEMENT
};
inline constexpr int kNumIsas = static_cast<int>(sizeof(kAllIsas) / sizeof(kAllIsas[0]));

// The list's name: "scalar", "avx2", ...
const char* isa_name(Isa isa);
// Parses a name of the list; returns false for anything else (and nullptr).
bool parse_isa(const char* text, Isa* isa);

}  // namespace sampleattn
