// Reads an enum field of a caller's struct as the integer it holds. Callers from C can store any
// int in an enum field; reading a value outside the enumerators as the C++ enum type is undefined
// behaviour (UBSan flags it), so validation inspects the raw bits instead.
#pragma once

#include <cstdint>
#include <cstring>

namespace sampleattn {

template <typename Enum>
int32_t enum_value(const Enum& e) {
  static_assert(sizeof(Enum) == sizeof(int32_t), "C enums of the ABI are int-sized");
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

}  // namespace sampleattn
