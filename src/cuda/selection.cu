// Stage 2 of SampleAttention on the device (docs/ALGORITHM.md), in two launches around the host's
// validation decision (cuda_backend.cpp). launch_ranking: per selection set, the sink columns are
// kept, the other columns are ranked by (score desc, index asc) with one radix sort of (set,
// ~score bits) keys over all sets (the sort is stable and the input is in index order, so ties
// keep the lower index first), and a block-wide double-precision prefix sum finds the fewest
// ranked columns whose score reaches the target (core/mask.h's selection_target), clamped to
// [min, max] stripes (clamp_stripe_count): alpha's count, in `keep` (with the look, kLookAlpha's
// too, in `look_keep`). The host then reads the ranking and `keep`, decides the stripe count per
// set (core/validation.h: the cost cap of max_density, the validation rows) and writes the
// decided counts back into `keep`;
// launch_stripes writes the kept columns (the sinks and that prefix of the ranking) in ascending
// order by a flag-and-compact pass. Every reduction runs in a fixed order: the selection is
// deterministic.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "core/mask.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 4;

int sort_end_bit(int num_sets) {
  int bits = 1;
  while ((int64_t{1} << bits) < num_sets) ++bits;
  return 32 + bits;
}

__global__ void set_keys_kernel(const SelectionArgs a) {
  const int s = blockIdx.y;
  const SelectionSet set = a.sets[s];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= set.k_len) return;
  const float* src = a.scores + set.score_base + j;
  float v = src[0];
  for (int h = 1; h < set.heads; ++h) v += src[static_cast<int64_t>(h) * set.k_len];  // head order, as on the CPU
  a.set_scores[set.offset + j] = v;
  if (j >= set.sinks) {
    const int64_t at = set.key_begin + j - set.sinks;
    a.keys_in[at] = (static_cast<uint64_t>(s) << 32) | static_cast<uint64_t>(~__float_as_uint(v));
    a.values_in[at] = static_cast<int32_t>(j);
  }
}

// The fewest ranked columns (set s's ranking, keys, `rest` of them) whose scores reach `need`, or
// every positive one when all of them together do not (alpha = 1 with rounding); 0 when need <= 0.
// Block-wide; the count is thread 0's.
template <typename Tmp>
__device__ int64_t ranked_cut(Tmp& tmp, int64_t* s_found, const uint64_t* keys, int64_t rest, double need) {
  using Scan = cub::BlockScan<double, kThreads>;
  using ReduceI = cub::BlockReduce<int64_t, kThreads>;
  if (!(need > 0)) return 0;
  const int tid = threadIdx.x;
  double running = 0;
  int64_t positive = 0;
  for (int64_t base = 0; base < rest; base += kThreads * kItems) {
    double v[kItems], incl[kItems];
    int64_t pos_count = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t idx = base + tid * kItems + i;
      v[i] = idx < rest ? static_cast<double>(__uint_as_float(~static_cast<uint32_t>(keys[idx]))) : 0.0;
      pos_count += v[i] > 0 ? 1 : 0;
    }
    double aggregate;
    Scan(tmp.scan).InclusiveSum(v, incl, aggregate);
    __syncthreads();
    int64_t candidate = INT64_MAX;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t idx = base + tid * kItems + i;
      if (idx < rest && running + incl[i] >= need && candidate == INT64_MAX) candidate = idx;
    }
    const int64_t first = ReduceI(tmp.ri).Reduce(candidate, [](int64_t x, int64_t y) { return x < y ? x : y; });
    __syncthreads();
    const int64_t npos = ReduceI(tmp.ri).Sum(pos_count);
    if (tid == 0) {
      *s_found = first;
      positive += npos;
    }
    __syncthreads();
    running += aggregate;
    if (*s_found != INT64_MAX) return *s_found + 1;
  }
  return positive;
}

__global__ void __launch_bounds__(kThreads) find_cut_kernel(const SelectionArgs a) {
  using Scan = cub::BlockScan<double, kThreads>;
  using ReduceD = cub::BlockReduce<double, kThreads>;
  using ReduceI = cub::BlockReduce<int64_t, kThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename ReduceD::TempStorage rd;
    typename ReduceI::TempStorage ri;
  } tmp;
  __shared__ int64_t s_found;
  const int s = blockIdx.x, tid = threadIdx.x;
  const SelectionSet set = a.sets[s];
  const float* scores = a.set_scores + set.offset;

  double part_all = 0, part_sinks = 0;
  for (int64_t j = tid; j < set.k_len; j += kThreads) {
    const double v = scores[j];
    part_all += v;
    if (j < set.sinks) part_sinks += v;
  }
  const double all = ReduceD(tmp.rd).Sum(part_all);
  __syncthreads();
  const double sinks_sum = ReduceD(tmp.rd).Sum(part_sinks);
  __shared__ double s_sums[2];
  if (tid == 0) {
    s_sums[0] = all;
    s_sums[1] = sinks_sum;
  }
  __syncthreads();
  const bool wmc = a.window_mass_counts != 0;
  const int64_t rest = set.k_len - set.sinks;
  const uint64_t* keys = a.keys_out + set.key_begin;
  // Alpha's count, and the look's (kLookAlpha's: the prefix it leaves out, core/mask.h).
  const int64_t take =
      ranked_cut(tmp, &s_found, keys, rest, selection_target(a.alpha, set.total, wmc, s_sums[0]) - s_sums[1]);
  int64_t look_take = 0;
  if (a.look_keep != nullptr) {
    look_take = ranked_cut(tmp, &s_found, keys, rest, selection_target(kLookAlpha, set.total, wmc, s_sums[0]) - s_sums[1]);
  }
  if (tid == 0) {
    const StripeCount c = clamp_stripe_count(set.sinks, take, rest, a.min_stripes, a.max_stripes);
    a.keep[2 * s] = static_cast<int32_t>(c.sinks);
    a.keep[2 * s + 1] = static_cast<int32_t>(c.ranked);
    if (a.look_keep != nullptr) {
      a.look_keep[s] = static_cast<int32_t>(clamp_stripe_count(set.sinks, look_take, rest, a.min_stripes, a.max_stripes).ranked);
    }
  }
}

__global__ void mark_kernel(const SelectionArgs a) {
  const int s = blockIdx.y;
  const SelectionSet set = a.sets[s];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j < a.keep[2 * s + 1]) a.flags[set.offset + a.values_out[set.key_begin + j]] = 1;
  if (j < a.keep[2 * s]) a.flags[set.offset + j] = 1;
}

__global__ void __launch_bounds__(kThreads) compact_kernel(const SelectionArgs a) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int s = blockIdx.x, tid = threadIdx.x;
  const SelectionSet set = a.sets[s];
  const uint8_t* flags = a.flags + set.offset;
  int32_t* out = a.stripes + set.offset;
  int64_t running = 0;
  for (int64_t base = 0; base < set.k_len; base += kThreads * kItems) {
    int f[kItems], at[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = base + tid * kItems + i;
      f[i] = j < set.k_len ? flags[j] : 0;
    }
    int aggregate;
    Scan(tmp).ExclusiveSum(f, at, aggregate);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (f[i]) out[running + at[i]] = static_cast<int32_t>(base + tid * kItems + i);
    }
    running += aggregate;
    __syncthreads();
  }
}

}  // namespace

size_t selection_sort_bytes(int64_t items, int num_sets) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), items, 0,
                                  sort_end_bit(num_sets));
  return bytes;
}

cudaError_t launch_ranking(const SelectionArgs& a, cudaStream_t stream) {
  if (a.num_sets == 0) return cudaSuccess;
  const dim3 column_grid(static_cast<unsigned>((a.max_k_len + kThreads - 1) / kThreads), static_cast<unsigned>(a.num_sets));
  if (column_grid.x == 0) return cudaSuccess;
  set_keys_kernel<<<column_grid, kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (a.total_items > 0) {
    size_t bytes = a.sort_temp_bytes;
    err = cub::DeviceRadixSort::SortPairs(a.sort_temp, bytes, a.keys_in, a.keys_out, a.values_in, a.values_out,
                                          a.total_items, 0, sort_end_bit(a.num_sets), stream);
    if (err != cudaSuccess) return err;
  }
  find_cut_kernel<<<a.num_sets, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_stripes(const SelectionArgs& a, cudaStream_t stream) {
  if (a.num_sets == 0) return cudaSuccess;
  const dim3 column_grid(static_cast<unsigned>((a.max_k_len + kThreads - 1) / kThreads), static_cast<unsigned>(a.num_sets));
  if (column_grid.x == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(a.flags, 0, static_cast<size_t>(a.total_columns), stream);
  if (err != cudaSuccess) return err;
  mark_kernel<<<column_grid, kThreads, 0, stream>>>(a);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  compact_kernel<<<a.num_sets, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda
