// The generator's random numbers: xoshiro256** streams seeded through splitmix64, so the same
// seed gives the same bytes with any standard library.
#include <cmath>

#include "workload/generator.h"

namespace sampleattn::workload {
namespace {

constexpr double kPi = 3.14159265358979323846;

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t s = seed;
  uint64_t h = splitmix64(&s);
  s = h ^ (a * 0xd1b54a32d192ed03ull);
  h = splitmix64(&s);
  s = h ^ (b * 0x8cb92ba72f3d8dd7ull);
  h = splitmix64(&s);
  s = h ^ (c * 0xa0761d6478bd642full);
  return splitmix64(&s);
}

Rng::Rng(uint64_t seed) {
  uint64_t s = seed;
  for (auto& w : s_) w = splitmix64(&s);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * kPi * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * kPi * u2);
}

uint64_t Rng::below(uint64_t n) {
  if (n <= 1) return 0;
  // Lemire's multiply-shift with rejection: unbiased.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t x = next_u64();
    const unsigned __int128 m = static_cast<unsigned __int128>(x) * n;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

}  // namespace sampleattn::workload
