#include "mpi/ring_attention.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/dtype_convert.h"
#include "mpi/collective.h"

namespace sampleattn::mpi {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

size_t elem_bytes(sampleattn_dtype t) { return dtype_size(static_cast<DType>(t)); }

// Query rows per libsampleattn call while a transfer is pending: a run is cut into slices so that
// between them the ring's transfer makes progress (MPI moves large messages only inside its
// calls). Without a pending transfer a run is one call.
constexpr int64_t kSliceRows = 2048;
// Tags of ring step i: i * kTagStride + piece (a message has at most kTagStride pieces of 1 GiB).
constexpr int kTagStride = 64;

// fn(begin, end) over [0, n) in `threads` contiguous parts at once: the merge, the output and the
// block packing, run between the library's calls while its workers are idle. Threads that cannot
// be started leave their part to the caller's thread.
template <typename Fn>
void parallel_parts(int64_t n, int threads, Fn fn) {
  const int64_t parts = std::clamp<int64_t>(std::min<int64_t>(threads, n / 64), 1, 256);
  std::vector<std::thread> team;
  int64_t inline_from = parts;
  for (int64_t t = 1; t < parts; ++t) {
    try {
      team.emplace_back([=] { fn(n * t / parts, n * (t + 1) / parts); });
    } catch (const std::system_error&) {
      inline_from = t;
      break;
    }
  }
  fn(0, n / parts);
  for (int64_t t = inline_from; t < parts; ++t) fn(n * t / parts, n * (t + 1) / parts);
  for (std::thread& th : team) th.join();
}

// One rank's K/V block as it travels: K rows [token][kv head][head_dim], then V rows
// [token][kv head][head_dim_v], in the inputs' dtypes.
struct BlockShape {
  uint64_t k_row = 0, v_row = 0;  // bytes per token
  uint64_t bytes(int64_t tokens) const { return static_cast<uint64_t>(tokens) * (k_row + v_row); }
};

class Ring {
 public:
  Ring(const RingCall& call) : c_(call), p_(call.params) {
    hq_ = p_.num_q_heads;
    dv_ = call.head_dim_v;
    shape_.k_row = static_cast<uint64_t>(p_.num_kv_heads) * p_.head_dim * elem_bytes(p_.k.dtype);
    shape_.v_row = static_cast<uint64_t>(p_.num_kv_heads) * dv_ * elem_bytes(p_.v.dtype);
    tokens_ = call.layout.tokens[static_cast<size_t>(call.rank)];
  }

  Status run(sampleattn_mpi_stats* stats) {
    const auto t0 = Clock::now();
    Status local = allocate();
    if (local.is_ok()) pack_own_block();
    SAMPLEATTN_RETURN_IF_ERROR(agree(c_.comm, local));

    const int right = (c_.rank + 1) % c_.ranks, left = (c_.rank + c_.ranks - 1) % c_.ranks;
    Status failed;  // a failed attention call: the ring goes on (the peers wait for its blocks)
    for (int step = 0; step < c_.ranks; ++step) {
      const int holder = (c_.rank - step + c_.ranks) % c_.ranks;
      std::vector<MPI_Request> requests;
      if (step + 1 < c_.ranks) {
        const int next = (holder + c_.ranks - 1) % c_.ranks;
        const uint64_t in = shape_.bytes(tokens_of(next)), out = shape_.bytes(tokens_of(holder));
        SAMPLEATTN_RETURN_IF_ERROR(post_receive(next_.data(), in, left, step * kTagStride, c_.comm, &requests));
        SAMPLEATTN_RETURN_IF_ERROR(post_send(current_.data(), out, right, step * kTagStride, c_.comm, &requests));
        bytes_received_ += in;
        bytes_sent_ += out;
      }
      if (failed.is_ok()) failed = attend_block(holder, &requests);
      const auto t_wait = Clock::now();
      if (!requests.empty()) {
        SAMPLEATTN_RETURN_IF_ERROR(mpi_status(
            MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall (ring)"));
      }
      wait_s_ += seconds(t_wait);
      std::swap(current_, next_);
    }
    const auto t_agree = Clock::now();
    SAMPLEATTN_RETURN_IF_ERROR(agree(c_.comm, failed));
    wait_s_ += seconds(t_agree);
    write_output();
    if (stats != nullptr) {
      stats->time_total_s = seconds(t0);
      stats->time_attention_s = attention_s_;
      stats->time_wait_s = wait_s_;
      stats->bytes_sent = bytes_sent_;
      stats->bytes_received = bytes_received_;
      stats->ring_steps = c_.ranks;
      stats->attention_calls = calls_;
    }
    return Status::ok();
  }

 private:
  int64_t tokens_of(int rank) const { return c_.layout.tokens[static_cast<size_t>(rank)]; }
  const std::vector<Run>& runs_of(int rank) const { return c_.layout.runs[static_cast<size_t>(rank)]; }

  Status allocate() {
    if (tokens_ > 0 && (p_.q.data == nullptr || p_.k.data == nullptr || p_.v.data == nullptr || p_.o.data == nullptr)) {
      return null_pointer(std::string(p_.q.data == nullptr   ? "q"
                                      : p_.k.data == nullptr ? "k"
                                      : p_.v.data == nullptr ? "v"
                                                             : "o") +
                          ".data is NULL and this rank holds " + std::to_string(tokens_) + " tokens");
    }
    try {
      int64_t most_tokens = 0, longest_run = 0;
      for (int r = 0; r < c_.ranks; ++r) most_tokens = std::max(most_tokens, tokens_of(r));
      for (const Run& run : runs_of(c_.rank)) longest_run = std::max(longest_run, run.len);
      const uint64_t block = shape_.bytes(most_tokens);
      if (block > static_cast<uint64_t>(kTagStride) << 30) {
        return invalid_shape("a rank's K/V block is " + std::to_string(block >> 30) + " GiB, over the " +
                             std::to_string(kTagStride) + " GiB a ring message may carry");
      }
      const size_t rows = static_cast<size_t>(tokens_) * hq_;
      const size_t slice = static_cast<size_t>(longest_run) * hq_;
      // Left uninitialized: a row's first result is copied in (merge); write_output zeroes a row
      // that none reached.
      acc_o_.reset(new float[rows * dv_]);
      acc_lse_.assign(rows, -std::numeric_limits<float>::infinity());
      part_o_.resize(slice * dv_);
      part_lse_.resize(slice);
      current_.resize(block);
      next_.resize(c_.ranks > 1 ? block : 0);
    } catch (const std::bad_alloc&) {
      return out_of_memory("out of memory for the ring's buffers (two K/V blocks and this rank's f32 output)");
    } catch (const std::length_error&) {
      return out_of_memory("the ring's buffers are larger than this process can address");
    }
    return Status::ok();
  }

  // This rank's K and V rows, from the caller's strided tensors into the block layout.
  void pack_own_block() {
    const size_t ek = elem_bytes(p_.k.dtype), ev = elem_bytes(p_.v.dtype);
    const char* k = static_cast<const char*>(p_.k.data);
    const char* v = static_cast<const char*>(p_.v.data);
    const size_t k_rows = static_cast<size_t>(tokens_) * shape_.k_row;
    parallel_parts(tokens_, c_.threads, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        char* k_out = current_.data() + static_cast<size_t>(t) * shape_.k_row;
        char* v_out = current_.data() + k_rows + static_cast<size_t>(t) * shape_.v_row;
        for (int h = 0; h < p_.num_kv_heads; ++h) {
          std::memcpy(k_out + h * p_.head_dim * ek, k + (t * p_.k.token_stride + h * p_.k.head_stride) * static_cast<int64_t>(ek),
                      p_.head_dim * ek);
          std::memcpy(v_out + h * dv_ * ev, v + (t * p_.v.token_stride + h * p_.v.head_stride) * static_cast<int64_t>(ev), dv_ * ev);
        }
      }
    });
  }

  // Attends this rank's runs to the block of rank `holder` (in current_), merging as it goes.
  Status attend_block(int holder, std::vector<MPI_Request>* requests) {
    const int64_t block_tokens = tokens_of(holder);
    const char* k = current_.data();
    const char* v = current_.data() + static_cast<size_t>(block_tokens) * shape_.k_row;
    for (const Run& q : runs_of(c_.rank)) {
      for (const Run& kv : runs_of(holder)) {
        if (kv.seq != q.seq) continue;
        // Causal: a block after the queries is unseen, one before them seen whole; the run itself
        // (the only run that overlaps its own positions) is causal. Otherwise every key is seen.
        bool diagonal = false;
        if (p_.causal == 1) {
          if (kv.begin >= q.end()) continue;
          if (kv.end() > q.begin) {
            if (kv.begin != q.begin || kv.len != q.len) {
              return internal_error("runs [" + std::to_string(q.begin) + ", " + std::to_string(q.end()) + ") and [" +
                                    std::to_string(kv.begin) + ", " + std::to_string(kv.end()) + ") overlap");
            }
            diagonal = true;
          }
        }
        for (int64_t s0 = 0; s0 < q.len;) {
          const int64_t rows = requests->empty() ? q.len - s0 : std::min(kSliceRows, q.len - s0);
          // The diagonal slice [s0, s0 + rows) sees keys [0, s0 + rows) of the run (its queries
          // are the last rows of those keys: libsampleattn's causal alignment).
          const int64_t keys = diagonal ? s0 + rows : kv.len;
          SAMPLEATTN_RETURN_IF_ERROR(attend(q.local + s0, rows, k + kv.local * shape_.k_row,
                                            v + kv.local * shape_.v_row, keys, diagonal));
          merge(q.local + s0, rows);
          if (!requests->empty()) {
            int done = 0;
            SAMPLEATTN_RETURN_IF_ERROR(mpi_status(
                MPI_Testall(static_cast<int>(requests->size()), requests->data(), &done, MPI_STATUSES_IGNORE),
                "MPI_Testall (ring)"));
            if (done) requests->clear();
          }
          s0 += rows;
        }
      }
    }
    return Status::ok();
  }

  // One libsampleattn call: local query rows [row0, row0 + rows) against `keys` block rows.
  Status attend(int64_t row0, int64_t rows, const char* k, const char* v, int64_t keys, bool causal) {
    sampleattn_params s;
    sampleattn_params_init(&s);
    const size_t eq = elem_bytes(p_.q.dtype);
    s.q = p_.q;
    s.q.data = static_cast<const char*>(p_.q.data) + row0 * p_.q.token_stride * static_cast<int64_t>(eq);
    s.k = {k, p_.k.dtype, static_cast<int64_t>(p_.num_kv_heads) * p_.head_dim, p_.head_dim};
    s.v = {v, p_.v.dtype, static_cast<int64_t>(p_.num_kv_heads) * dv_, dv_};
    s.o = {part_o_.data(), SAMPLEATTN_DTYPE_F32, static_cast<int64_t>(hq_) * dv_, dv_};
    s.lse = part_lse_.data();
    s.head_dim = p_.head_dim;
    s.head_dim_v = dv_;
    s.num_q_heads = p_.num_q_heads;
    s.num_kv_heads = p_.num_kv_heads;
    s.batch = 1;
    s.seqlen_q = rows;
    s.seqlen_k = keys;
    s.softmax_scale = p_.softmax_scale;
    s.causal = causal ? 1 : 0;
    s.method = SAMPLEATTN_METHOD_DENSE;
    s.precision = p_.precision;
    s.softcap = p_.softcap;
    s.stream = p_.stream;
    const auto t = Clock::now();
    const sampleattn_status status = sampleattn_forward(c_.context, &s, nullptr);
    attention_s_ += seconds(t);
    ++calls_;
    if (status != SAMPLEATTN_SUCCESS) {
      return {status, std::string("attention of a ring block: ") + sampleattn_last_error()};
    }
    return Status::ok();
  }

  // Adds a call's rows to the running result: o = (o e^(l - m) + o' e^(l' - m)) / (e^(l - m) +
  // e^(l' - m)), l = m + log(e^(l - m) + e^(l' - m)), m the larger of l and l'.
  void merge(int64_t row0, int64_t rows) {
    parallel_parts(rows * hq_, c_.threads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float lp = part_lse_[static_cast<size_t>(i)];
        float& l = acc_lse_[static_cast<size_t>(row0 * hq_ + i)];
        if (lp == -std::numeric_limits<float>::infinity()) continue;
        float* o = acc_o_.get() + static_cast<size_t>(row0 * hq_ + i) * dv_;
        const float* op = part_o_.data() + static_cast<size_t>(i) * dv_;
        if (l == -std::numeric_limits<float>::infinity()) {  // the row's first keys
          std::copy(op, op + dv_, o);
          l = lp;
          continue;
        }
        const float m = std::max(l, lp);
        const float w = std::exp(l - m), wp = std::exp(lp - m);
        const float sum = w + wp;
        const float a = w / sum, b = wp / sum;
        for (int c = 0; c < dv_; ++c) o[c] = o[c] * a + op[c] * b;
        l = m + std::log(sum);
      }
    });
  }

  // The merged rows (with the learned sinks' share of the denominators) into the caller's o and lse.
  void write_output() {
    const DType out = static_cast<DType>(p_.o.dtype);
    parallel_parts(tokens_, c_.threads, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        for (int h = 0; h < hq_; ++h) {
          const size_t at = static_cast<size_t>(t * hq_ + h);
          float l = acc_lse_[at];
          float factor = 1.f;
          if (p_.sinks != nullptr && p_.sinks[h] != -std::numeric_limits<float>::infinity()) {
            const float sink = p_.sinks[h];
            const float m = std::max(l, sink);
            const float total = m + std::log(std::exp(l - m) + std::exp(sink - m));
            factor = std::exp(l - total);
            l = total;
          }
          float* o = acc_o_.get() + at * dv_;
          if (l == -std::numeric_limits<float>::infinity()) std::fill(o, o + dv_, 0.f);  // saw no key
          const int64_t base = t * p_.o.token_stride + h * p_.o.head_stride;
          switch (out) {
            case DType::kF32:
              for (int c = 0; c < dv_; ++c) static_cast<float*>(p_.o.data)[base + c] = o[c] * factor;
              break;
            case DType::kF16:
              for (int c = 0; c < dv_; ++c) static_cast<uint16_t*>(p_.o.data)[base + c] = f32_to_f16(o[c] * factor);
              break;
            case DType::kBF16:
              for (int c = 0; c < dv_; ++c) static_cast<uint16_t*>(p_.o.data)[base + c] = f32_to_bf16(o[c] * factor);
              break;
            default:
              for (int c = 0; c < dv_; ++c) store_scalar(p_.o.data, out, base + c, o[c] * factor);
          }
          if (p_.lse != nullptr) p_.lse[at] = l;
        }
      }
    });
  }

  const RingCall& c_;
  const sampleattn_params& p_;
  int hq_ = 0, dv_ = 0;
  int64_t tokens_ = 0;
  BlockShape shape_;
  std::unique_ptr<float[]> acc_o_;
  std::vector<float> acc_lse_, part_o_, part_lse_;
  std::vector<char> current_, next_;
  double attention_s_ = 0, wait_s_ = 0;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  int calls_ = 0;
};

}  // namespace

Status ring_attention(const RingCall& call, sampleattn_mpi_stats* stats) {
  Ring ring(call);
  return ring.run(stats);
}

}  // namespace sampleattn::mpi
