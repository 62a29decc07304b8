// Decode, second kernel: each group's units (decode_kernel.cuh) merged by log-sum-exp into O and
// lse. A row's max M is the largest of its units' maxima (log2 units), its sum the units' sums
// scaled by 2^(max_u - M), the head's sink added (core/score_mod.h's sum_with_sink), its output
// the units' outputs likewise scaled over that sum; a row that saw no key gets zeros and lse
// -inf, as in finish_rows (attention_block.cuh).
#include <cuda_runtime.h>

#include "core/mask.h"
#include "core/score_mod.h"
#include "cuda/device_utils.cuh"
#include "cuda/launch.h"

namespace sampleattn::cuda {
namespace {

// One block per group; warp w merges rows w, w + 4, ...
__global__ void __launch_bounds__(128) decode_merge_kernel(const DecodeArgs da) {
  const AttentionArgs& a = da.attn;
  const DecodeGroup gr = da.groups[blockIdx.x];
  const SeqDesc sd = a.seqs[gr.seq];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int dv = a.head_dim_v;
  for (int r = warp; r < gr.rows; r += 4) {
    float mx = -INFINITY;
    for (int64_t u = gr.first_unit; u < gr.first_unit + gr.units; ++u) mx = fmaxf(mx, da.part_max[da.units[u].part + r]);
    float sum = 0.f;
    if (mx > -INFINITY) {
      for (int64_t u = gr.first_unit; u < gr.first_unit + gr.units; ++u) {
        const float mu = da.part_max[da.units[u].part + r];
        if (mu > -INFINITY) sum += da.part_sum[da.units[u].part + r] * exp2f(mu - mx);
      }
    }
    const int stacked = gr.row0 + r;
    const int head = gr.kvh * a.group + stacked % a.group;
    const int64_t token = sd.q_begin + stacked / a.group;
    sum = sum_with_sink(a.mod.head(head), mx, sum);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int64_t base = token * a.o_token_stride + head * a.o_head_stride;
    for (int x = lane; x < dv; x += 32) {
      float acc = 0.f;
      if (mx > -INFINITY) {
        for (int64_t u = gr.first_unit; u < gr.first_unit + gr.units; ++u) {
          const int64_t at = da.units[u].part + r;
          const float mu = da.part_max[at];
          if (mu > -INFINITY) acc += da.part_o[at * dv + x] * exp2f(mu - mx);
        }
      }
      dev::store_out(a.o, a.o_type, base + x, acc * inv);
    }
    if (a.lse != nullptr && lane == 0) {
      a.lse[token * a.num_q_heads + head] = sum > 0.f ? lse_from_log2<float>(mx, log2f(sum)) : -INFINITY;
    }
  }
}

}  // namespace

cudaError_t launch_decode_merge(const DecodeArgs& args, cudaStream_t stream) {
  if (args.num_groups == 0) return cudaSuccess;
  decode_merge_kernel<<<static_cast<unsigned>(args.num_groups), 128, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace sampleattn::cuda
