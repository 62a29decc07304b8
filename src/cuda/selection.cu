// Stage 2 of SampleAttention on the device (docs/ALGORITHM.md), in two launches around the host's
// validation decision (cuda_backend.cpp). launch_ranking: per selection set, the sink columns are
// kept, the other columns are ranked by (score desc, index asc) with one radix sort of (set,
// ~score bits) keys over all sets (the sort is stable and the input is in index order, so ties
// keep the lower index first), and a block-wide double-precision prefix sum finds the fewest
// ranked columns whose score reaches the target (core/mask.h's selection_target), clamped to
// [min, max] stripes (clamp_stripe_count): alpha's count, in `keep`. The host then reads the
// ranking and `keep`, decides the stripe count per set (core/validation.h: the cost cap of
// max_density, the validation rows) and writes the decided counts back into `keep`;
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

__global__ void __launch_bounds__(kThreads) find_cut_kernel(const SelectionArgs a) {
  using Scan = cub::BlockScan<double, kThreads>;
  using ReduceD = cub::BlockReduce<double, kThreads>;
  using ReduceI = cub::BlockReduce<int64_t, kThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename ReduceD::TempStorage rd;
    typename ReduceI::TempStorage ri;
  } tmp;
  __shared__ double s_need;
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
  if (tid == 0) s_need = selection_target(a.alpha, set.total, a.window_mass_counts != 0, all) - sinks_sum;
  __syncthreads();
  const double need = s_need;
  const int64_t rest = set.k_len - set.sinks;
  const uint64_t* keys = a.keys_out + set.key_begin;

  int64_t take = 0;
  if (need > 0) {
    double running = 0;
    int64_t positive = 0;
    int64_t found = -1;
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
        s_found = first;
        positive += npos;
      }
      __syncthreads();
      running += aggregate;
      if (s_found != INT64_MAX) {
        found = s_found;
        break;
      }
    }
    // Every column together does not reach the target (alpha = 1 with rounding): keep the ones
    // that carry any score.
    take = found >= 0 ? found + 1 : positive;
  }
  if (tid == 0) {
    const StripeCount c = clamp_stripe_count(set.sinks, take, rest, a.min_stripes, a.max_stripes);
    a.keep[2 * s] = static_cast<int32_t>(c.sinks);
    a.keep[2 * s + 1] = static_cast<int32_t>(c.ranked);
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
