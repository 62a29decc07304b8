// Stage 1's fixed-point column scores (cpu/score_fixed_point.h): hostile values convert to a
// bounded, deterministic amount, and the sums cannot overflow.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/score_fixed_point.h"

namespace sampleattn::cpu {
namespace {

constexpr int64_t kOne = int64_t{1} << kScoreBits;

TEST(ScoreFixedPoint, OrdinaryValuesRoundToTheNearestUnit) {
  EXPECT_EQ(column_sum_to_fixed(0.f, 32), 0);
  EXPECT_EQ(column_sum_to_fixed(1.f, 32), kOne);
  EXPECT_EQ(column_sum_to_fixed(0.25f, 32), kOne / 4);
  EXPECT_EQ(column_sum_to_fixed(31.5f, 32), 63 * kOne / 2);
  EXPECT_FLOAT_EQ(fixed_to_score(column_sum_to_fixed(0.1234567f, 4)), 0.1234567f);
}

TEST(ScoreFixedPoint, NanNegativeAndEmptyGiveZero) {
  EXPECT_EQ(column_sum_to_fixed(std::numeric_limits<float>::quiet_NaN(), 32), 0);
  EXPECT_EQ(column_sum_to_fixed(-std::numeric_limits<float>::quiet_NaN(), 32), 0);
  EXPECT_EQ(column_sum_to_fixed(-1.f, 32), 0);
  EXPECT_EQ(column_sum_to_fixed(-std::numeric_limits<float>::infinity(), 32), 0);
  EXPECT_EQ(column_sum_to_fixed(-0.f, 32), 0);
  EXPECT_EQ(column_sum_to_fixed(1.f, 0), 0);
  EXPECT_EQ(column_sum_to_fixed(1.f, -5), 0);
}

TEST(ScoreFixedPoint, HugeValuesClampToTheChunkRows) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(column_sum_to_fixed(inf, 32), 32 * kOne);
  EXPECT_EQ(column_sum_to_fixed(std::numeric_limits<float>::max(), 32), 32 * kOne);
  EXPECT_EQ(column_sum_to_fixed(33.f, 32), 32 * kOne);
  // The largest chunk the int32 token counts allow still fits, with room for 4 heads' totals.
  const int most = std::numeric_limits<int32_t>::max();
  EXPECT_EQ(column_sum_to_fixed(inf, most), int64_t{most} * kOne);
  EXPECT_LT(int64_t{most} * kOne, std::numeric_limits<int64_t>::max() / 4);
}

TEST(ScoreFixedPoint, HeadTotalsSaturateInsteadOfOverflowing) {
  const int64_t big = column_sum_to_fixed(std::numeric_limits<float>::infinity(), std::numeric_limits<int32_t>::max());
  int64_t total = 0;
  for (int h = 0; h < 8; ++h) total = add_fixed(total, big);
  EXPECT_EQ(total, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(add_fixed(3, 4), 7);
  EXPECT_TRUE(std::isfinite(fixed_to_score(total)));
}

}  // namespace
}  // namespace sampleattn::cpu
