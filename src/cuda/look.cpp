#include "cuda/look.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/sparse_plan.h"
#include "cuda/cuda_errors.h"
#include "cuda/launch.h"

namespace sampleattn::cuda {

Status find_dense_rows(const Problem& p, const CallLayout& cl, const DeviceWorkspace& ws, const HostStaging& hs,
                       const DeviceInputs& in, cudaStream_t stream, CallDecisions* decided) {
  const int hq = p.num_q_heads;
  const size_t nseq = p.sequences.size();
  decided->dense_look.assign(nseq * hq, 0);
  decided->dense_rows.assign(nseq * hq, {});
  decided->dense_blocks = 0;
  int32_t* head_dense = hs.at<int32_t>(cl.h_head_dense);
  std::fill(head_dense, head_dense + nseq * hq, 0);

  // Each sparse head's plan as the attention will run it; the ones the look's cost takes past
  // max_density go dense unlooked, the others' rows past their band are looked at in blocks: the
  // probe's first (core/mask.h, look_probe_row; core/sparse_plan.h, look_row_blocks), then the
  // other blocks of the heads it flagged enough rows of (look_whole_head), each pass latest rows
  // first.
  struct Costed {
    LookBlock block;
    int64_t cost;
  };
  std::vector<Costed> probe, rest;
  std::vector<HeadPlan> plans(nseq * hq);
  const int32_t* set_dense = hs.at<int32_t>(cl.h_dense);  // validation's dense sets, as the device reads them
  for (int s : cl.sampled_seqs) {
    const Sequence& seq = p.sequences[s];
    const SeqDesc& sd = cl.seqs[s];
    for (int h = 0; h < hq; ++h) {
      const int set = sd.set_base + (cl.per_group ? h / p.group : h);
      HeadPlan& hp = plans[static_cast<size_t>(s) * hq + h];
      if (set_dense[set] != 0) continue;  // dense by validation or cost
      hp.dense = false;
      hp.window = sd.window;
      hp.stripes = decided->stripes[set];
      if (look_runs_dense(p, seq, hp)) {
        decided->dense_look[static_cast<size_t>(s) * hq + h] = 1;
        continue;
      }
      const int64_t i0 = std::max<int64_t>(0, hp.window - seq.q_offset());
      std::vector<LookRowBlock> head_probe, head_rest;
      look_row_blocks(i0, seq.q_len, &head_probe, &head_rest);
      for (const auto* list : {&head_probe, &head_rest}) {
        for (const LookRowBlock& r : *list) {
          const int64_t p_last = seq.q_offset() + r.first + int64_t{r.count - 1} * r.stride;
          (list == &head_probe ? probe : rest)
              .push_back({LookBlock{s, h, r.first, r.count, r.stride},
                          causal_end(p_last) - model_lo(seq.q_offset() + r.first, p.window_left)});
        }
      }
    }
  }

  if (!probe.empty()) {
    // Each set's left-out stripes as bits, a word per 64 keys.
    uint64_t* bits = hs.at<uint64_t>(cl.h_look_bits);
    int64_t* offsets = hs.at<int64_t>(cl.h_look_bit_offsets);
    std::fill(bits, bits + cl.look_bit_words, uint64_t{0});
    int64_t words = 0;
    for (size_t set = 0; set < cl.sets.size(); ++set) {
      offsets[set] = words;
      for (const int32_t j : decided->look_stripes[set]) bits[words + j / 64] |= uint64_t{1} << (j % 64);
      words += (cl.sets[set].k_len + 63) / 64;
    }
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (look bits)",
                          cudaMemcpyAsync(ws.at<uint64_t>(cl.o_look_bits), bits, sizeof(uint64_t) * cl.look_bit_words,
                                          cudaMemcpyHostToDevice, stream));
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (look bit offsets)",
                          cudaMemcpyAsync(ws.at<int64_t>(cl.o_look_bit_offsets), offsets, sizeof(int64_t) * cl.sets.size(),
                                          cudaMemcpyHostToDevice, stream));
    const size_t flag_bytes = static_cast<size_t>(p.total_q) * hq;
    SAMPLEATTN_CUDA_CHECK("cudaMemsetAsync (look flags)",
                          cudaMemsetAsync(ws.at<uint8_t>(cl.o_look_flags), 0, flag_bytes, stream));
    const uint8_t* flags = hs.at<uint8_t>(cl.h_look_flags);
    // One pass over some blocks (from `first` in the block arrays; the first pass packs the keys),
    // the flagged rows added to their heads' dense rows.
    const auto look_pass = [&](std::vector<Costed>* list, int64_t first) -> Status {
      std::stable_sort(list->begin(), list->end(), [](const Costed& a, const Costed& b) { return a.cost > b.cost; });
      LookBlock* blocks = hs.at<LookBlock>(cl.h_look_blocks) + first;
      for (size_t i = 0; i < list->size(); ++i) blocks[i] = (*list)[i].block;
      LookBlock* device_blocks = ws.at<LookBlock>(cl.o_look_blocks) + first;
      SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (look blocks)",
                            cudaMemcpyAsync(device_blocks, blocks, sizeof(LookBlock) * list->size(), cudaMemcpyHostToDevice,
                                            stream));
      LookArgs la = look_args(p, cl, ws, in);
      la.blocks = device_blocks;
      la.num_blocks = static_cast<int64_t>(list->size());
      if (first > 0) la.num_tiles = 0;  // packed by the first pass
      SAMPLEATTN_CUDA_CHECK("look kernel", launch_look(cl.bf16, la, stream));
      SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (look flags)",
                            cudaMemcpyAsync(hs.at<uint8_t>(cl.h_look_flags), ws.at<uint8_t>(cl.o_look_flags), flag_bytes,
                                            cudaMemcpyDeviceToHost, stream));
      SAMPLEATTN_CUDA_CHECK("cudaStreamSynchronize (look flags)", cudaStreamSynchronize(stream));
      for (const Costed& c : *list) {
        const LookBlock& b = c.block;
        std::vector<int32_t>& rows = decided->dense_rows[static_cast<size_t>(b.seq) * hq + b.head];
        const int64_t q_begin = p.sequences[b.seq].q_begin;
        for (int r = 0; r < b.count; ++r) {
          const int64_t i = b.first + int64_t{r} * b.stride;
          if (flags[(q_begin + i) * hq + b.head] != 0) rows.push_back(static_cast<int32_t>(i));
        }
      }
      return Status::ok();
    };
    SAMPLEATTN_RETURN_IF_ERROR(look_pass(&probe, 0));
    // The heads whose probe flagged enough of its rows are looked at whole.
    std::vector<int64_t> probe_rows(nseq * hq, 0);
    for (const Costed& c : probe) probe_rows[static_cast<size_t>(c.block.seq) * hq + c.block.head] += c.block.count;
    std::erase_if(rest, [&](const Costed& c) {
      const size_t i = static_cast<size_t>(c.block.seq) * hq + c.block.head;
      return !look_whole_head(static_cast<int64_t>(decided->dense_rows[i].size()), probe_rows[i]);
    });
    if (!rest.empty()) SAMPLEATTN_RETURN_IF_ERROR(look_pass(&rest, static_cast<int64_t>(probe.size())));

    // The flagged rows, then the max_density rule with them.
    for (int s : cl.sampled_seqs) {
      for (int h = 0; h < hq; ++h) {
        const size_t i = static_cast<size_t>(s) * hq + h;
        std::vector<int32_t>& rows = decided->dense_rows[i];
        if (rows.empty()) continue;
        std::sort(rows.begin(), rows.end());  // the blocks ran latest first
        plans[i].dense_rows = rows;
        if (look_runs_dense(p, p.sequences[s], plans[i])) {
          decided->dense_look[i] = 1;
          rows.clear();
        }
      }
    }
  }

  // The heads made dense, and the dense rows in blocks of one head.
  int32_t* dense_rows = hs.at<int32_t>(cl.h_dense_rows);
  RowBlock* dense_blocks = hs.at<RowBlock>(cl.h_dense_blocks);
  int32_t* dense_heads = hs.at<int32_t>(cl.h_dense_heads);
  int64_t n_rows = 0, n_blocks = 0;
  for (size_t i = 0; i < nseq * hq; ++i) {
    head_dense[i] = decided->dense_look[i];
    const std::vector<int32_t>& rows = decided->dense_rows[i];
    for (size_t r0 = 0; r0 < rows.size(); r0 += static_cast<size_t>(cl.block_rows)) {
      const int count = static_cast<int>(std::min<size_t>(cl.block_rows, rows.size() - r0));
      dense_blocks[n_blocks] = RowBlock{static_cast<int32_t>(i / hq), count, n_rows + static_cast<int64_t>(r0)};
      dense_heads[n_blocks] = static_cast<int32_t>(i % hq);
      ++n_blocks;
    }
    std::copy(rows.begin(), rows.end(), dense_rows + n_rows);
    n_rows += static_cast<int64_t>(rows.size());
  }
  decided->dense_blocks = n_blocks;
  SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (heads made dense)",
                        cudaMemcpyAsync(ws.at<int32_t>(cl.o_head_dense), head_dense, sizeof(int32_t) * nseq * hq,
                                        cudaMemcpyHostToDevice, stream));
  if (n_blocks > 0) {
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (dense rows)",
                          cudaMemcpyAsync(ws.at<int32_t>(cl.o_dense_rows), dense_rows, sizeof(int32_t) * n_rows,
                                          cudaMemcpyHostToDevice, stream));
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (dense row blocks)",
                          cudaMemcpyAsync(ws.at<RowBlock>(cl.o_dense_blocks), dense_blocks, sizeof(RowBlock) * n_blocks,
                                          cudaMemcpyHostToDevice, stream));
    SAMPLEATTN_CUDA_CHECK("cudaMemcpyAsync (dense row heads)",
                          cudaMemcpyAsync(ws.at<int32_t>(cl.o_dense_heads), dense_heads, sizeof(int32_t) * n_blocks,
                                          cudaMemcpyHostToDevice, stream));
  }
  return Status::ok();
}

}  // namespace sampleattn::cuda
