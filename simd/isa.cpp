#include "simd/isa.h"

#include <cstring>

namespace sampleattn {

const char* isa_name(Isa isa) {
  switch (isa) {
#define SAMPLEATTN_ISA_NAME(name, Enum) \
  case Isa::Enum: return #name;
    SAMPLEATTN_FOR_EACH_ISA(SAMPLEATTN_ISA_NAME)
#undef SAMPLEATTN_ISA_NAME
  }
  return "unknown";
}

bool parse_isa(const char* text, Isa* isa) {
  if (text == nullptr) return false;
  for (Isa candidate : kAllIsas) {
    if (std::strcmp(text, isa_name(candidate)) == 0) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

}  // namespace sampleattn
