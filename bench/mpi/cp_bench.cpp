// Context-parallel prefill over MPI, dense (the ring) or sample (SampleAttention across ranks):
// times sampleattn_mpi_forward on every rank of MPI_COMM_WORLD, one CPU context per rank. Each rank
// holds only its own shard of Q/K/V: values that are a function of (global position, head, dim),
// or (--inputs DIR) its rows of DIR/q.npy, k.npy and v.npy ([seq, heads, dim], as `sampleattn
// generate` writes them: structured inputs on which SampleAttention's heads run sparse), so every
// split and rank count sees the same global inputs. A repetition's time is the slowest rank's; the
// median is reported.
//
//   mpirun -np 2 --map-by slot:PE=8 --bind-to core sampleattn_cp_bench --seq 65536 --threads 8 --json
//   sampleattn generate --seq 65536 --heads 32 --kv-heads 8 --dtype bf16 --out /tmp/in
//   mpirun -np 4 ... sampleattn_cp_bench --method sample --inputs /tmp/in --split contiguous --json
//
// Splits: contiguous (even runs), zigzag (the library's two chunks a rank), balanced (contiguous
// runs of equal modeled work, explicit begin/length: the token at position i costs
// `--balance A` x seq + i for its query row and `--balance-keys B` x (seq - i) for its key, which
// stage 1 scores against every sampled row after it on the key's rank; A = B = 0 balances dense
// pairs, see balanced_cut). `--look N`: method sample with sample.look = N (the look at every
// row; its keys are all-gathered).
//
// bench/mpi/cp_scaling.sh runs the 1/2/4-rank comparison. Correctness is tests/mpi/'s job.
#ifndef OMPI_SKIP_MPICXX  // the C API only (Open MPI's C++ bindings header warns under -Wextra)
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "sampleattn/sampleattn_mpi.h"

namespace {

struct Options {
  int64_t seq = 65536;
  long heads = 32, kv_heads = 8, dim = 128, threads = 0, repeat = 3, warmup = 1, causal = 1;
  std::string dtype = "bf16", precision = "auto", split = "zigzag", method = "dense", inputs;
  double balance = 0.0;       // --split balanced: a row's cost beside its causal keys, in units of L
  double balance_keys = 0.0;  // --split balanced: a key's cost per later token (stage 1's sampled rows)
  double look = 0.0;     // --method sample: sample.look, the look at every row (0: off)
  bool json = false;
};

// Where rank r's run begins under --split balanced: contiguous runs of equal modeled work when
// the token at position i costs a * L + i for its query row (a = 0: the causal pairs, dense;
// SampleAttention's window and stripes add a per-row part) and b * (L - i) for its key (stage 1:
// the key's rank scores it against the sampled rows after it, b = r_row x their cost per pair
// against the attention's). With x in units of L the work up to x is
// W(x) = (a + b) x + (1 - b) x^2 / 2, and the cut solves W(x) = (r / P) W(1).
int64_t balanced_cut(int64_t L, int64_t P, int64_t r, double a, double b) {
  if (r <= 0) return 0;
  if (r >= P) return L;
  const double c = 0.5 * (1.0 - b), lin = a + b;
  const double share = static_cast<double>(r) / static_cast<double>(P) * (lin + c);
  const double x = std::abs(c) < 1e-12 ? share / lin : (-lin + std::sqrt(lin * lin + 4.0 * c * share)) / (2.0 * c);
  return std::clamp<int64_t>(std::llround(x * static_cast<double>(L)), 0, L);
}

// "" when argv parses, else what is wrong. Accepts "--opt value" and "--opt=value".
std::string parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "--json") { o->json = true; continue; }
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return arg + " needs a value";
    }
    auto number = [&](auto* out, long long lo, long long hi) {
      char* end = nullptr;
      const long long v = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || v < lo || v > hi) return false;
      *out = static_cast<std::remove_reference_t<decltype(*out)>>(v);
      return true;
    };
    auto choice = [&](std::string* out, std::initializer_list<const char*> allowed) {
      for (const char* a : allowed) if (value == a) { *out = value; return true; }
      return false;
    };
    bool ok = false;
    if (arg == "--seq") ok = number(&o->seq, 1, 1LL << 40);
    else if (arg == "--heads") ok = number(&o->heads, 1, 1 << 20);
    else if (arg == "--kv-heads") ok = number(&o->kv_heads, 1, 1 << 20);
    else if (arg == "--dim") ok = number(&o->dim, 1, 4096);
    else if (arg == "--threads") ok = number(&o->threads, 0, 1 << 16);
    else if (arg == "--repeat") ok = number(&o->repeat, 1, 1 << 20);
    else if (arg == "--warmup") ok = number(&o->warmup, 0, 1 << 20);
    else if (arg == "--causal") ok = number(&o->causal, 0, 1);
    else if (arg == "--dtype") ok = choice(&o->dtype, {"f32", "f16", "bf16"});
    else if (arg == "--precision") ok = choice(&o->precision, {"auto", "f32", "bf16"});
    else if (arg == "--split") ok = choice(&o->split, {"contiguous", "zigzag", "balanced"});
    else if (arg == "--balance") {
      char* end = nullptr;
      o->balance = std::strtod(value.c_str(), &end);
      ok = !value.empty() && *end == '\0' && o->balance >= 0.0 && o->balance <= 100.0;
    }
    else if (arg == "--balance-keys") {
      char* end = nullptr;
      o->balance_keys = std::strtod(value.c_str(), &end);
      ok = !value.empty() && *end == '\0' && o->balance_keys >= 0.0 && o->balance_keys <= 100.0;
    }
    else if (arg == "--method") ok = choice(&o->method, {"dense", "sample"});
    else if (arg == "--look") {
      char* end = nullptr;
      o->look = std::strtod(value.c_str(), &end);
      ok = !value.empty() && *end == '\0' && o->look >= 0.0 && o->look <= 1000.0;
    }
    else if (arg == "--inputs") ok = !(o->inputs = value).empty();
    else return "unknown option " + arg;
    if (!ok) return "bad value '" + value + "' for " + arg;
  }
  return "";
}

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// f32 -> bf16 / f16 bits, rounding to nearest even; for the values of fill() only (|f| < 1).
uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

uint16_t to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
  if (a < 0x38800000u)  // below 2^-14: an f16 subnormal, |f| * 2^24 rounded (exact scaling)
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(__builtin_rintf(std::fabs(f) * 16777216.0f)));
  return static_cast<uint16_t>(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
}

using Runs = std::vector<std::pair<int64_t, int64_t>>;  // [begin, end) of the global positions

// One tensor of this rank's shard, [local token, head, dim], value in [-1, 1) from the global
// (tensor, position, head, dim).
std::vector<unsigned char> fill(const Runs& runs, uint64_t tensor, long heads, long dim, sampleattn_dtype dt) {
  int64_t tokens = 0;
  for (const auto& r : runs) tokens += r.second - r.first;
  const size_t esize = dt == SAMPLEATTN_DTYPE_F32 ? 4 : 2;
  // Never empty (a rank of a short sequence may hold no token), so that data is never NULL.
  std::vector<unsigned char> buf(std::max<size_t>(static_cast<size_t>(tokens * heads * dim) * esize, 64));
  size_t i = 0;
  for (const auto& r : runs)
    for (int64_t p = r.first; p < r.second; ++p)
      for (long h = 0; h < heads; ++h)
        for (long c = 0; c < dim; ++c, ++i) {
          const uint64_t key = ((static_cast<uint64_t>(p) * heads + h) * dim + c) * 4 + tensor;
          const float v = static_cast<float>(mix(key) >> 40) * (2.0f / 16777216.0f) - 1.0f;
          if (dt == SAMPLEATTN_DTYPE_F32) {
            std::memcpy(&buf[i * 4], &v, 4);
          } else {
            const uint16_t b = dt == SAMPLEATTN_DTYPE_BF16 ? to_bf16(v) : to_f16(v);
            std::memcpy(&buf[i * 2], &b, 2);
          }
        }
  return buf;
}

// One tensor of this rank's shard read from a .npy file of [seq, heads, dim] in the dtype's
// descr ('<f4', '<f2', '<u2' for bf16 bits); "" on success, else what is wrong.
std::string read_npy_rows(const std::string& path, const Runs& runs, int64_t seq, long heads, long dim,
                          sampleattn_dtype dt, std::vector<unsigned char>* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return path + ": cannot open";
  char magic[8];
  std::string err;
  uint32_t header_len = 0;
  if (std::fread(magic, 1, 8, f) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0) err = path + ": not a .npy file";
  if (err.empty()) {
    unsigned char len[4] = {0, 0, 0, 0};
    const size_t n = magic[6] == 1 ? 2 : 4;
    if (std::fread(len, 1, n, f) != n) err = path + ": truncated header";
    header_len = len[0] | (len[1] << 8) | (static_cast<uint32_t>(len[2]) << 16) | (static_cast<uint32_t>(len[3]) << 24);
  }
  std::string header(header_len, '\0');
  if (err.empty() && std::fread(header.data(), 1, header_len, f) != header_len) err = path + ": truncated header";
  const char* descr = dt == SAMPLEATTN_DTYPE_F32 ? "'<f4'" : dt == SAMPLEATTN_DTYPE_F16 ? "'<f2'" : "'<u2'";
  std::string shape = "(";  // appends: GCC 12's -Wrestrict misfires on "(" + std::string
  shape += std::to_string(seq);
  shape += ", ";
  shape += std::to_string(heads);
  shape += ", ";
  shape += std::to_string(dim);
  shape += ")";
  if (err.empty() && (header.find(descr) == std::string::npos || header.find(shape) == std::string::npos ||
                      header.find("'fortran_order': False") == std::string::npos)) {
    err = path + ": expected shape " + shape + " of " + descr + " in C order; the header is " + header;
  }
  const long data_at = std::ftell(f);
  const size_t row = static_cast<size_t>(heads * dim) * (dt == SAMPLEATTN_DTYPE_F32 ? 4 : 2);
  int64_t tokens = 0;
  for (const auto& r : runs) tokens += r.second - r.first;
  out->assign(std::max<size_t>(static_cast<size_t>(tokens) * row, 64), 0);
  size_t at = 0;
  for (const auto& r : runs) {
    if (!err.empty() || r.second <= r.first) continue;
    const size_t bytes = static_cast<size_t>(r.second - r.first) * row;
    if (std::fseek(f, data_at + static_cast<long>(r.first * static_cast<int64_t>(row)), SEEK_SET) != 0 ||
        std::fread(out->data() + at, 1, bytes, f) != bytes) {
      err = path + ": cannot read rows " + std::to_string(r.first) + ".." + std::to_string(r.second);
    }
    at += bytes;
  }
  std::fclose(f);
  return err;
}

std::string allowed_cpus() {  // e.g. "0-3,8"
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return "?";
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    int e = c;
    while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) ++e;
    if (!out.empty()) out += ',';
    out += std::to_string(c);  // (appends: GCC 12's -Wrestrict misfires on "," + std::string)
    if (e > c) out += '-' + std::to_string(e);
    c = e;
  }
  return out;
}

std::string quoted(const std::string& s) {  // a JSON string (control characters dropped)
  std::string out = "\"";
  for (const char ch : s) {
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

std::vector<std::string> gather_strings(const std::string& s, int rank, int size) {
  const int len = static_cast<int>(s.size());
  std::vector<int> lens(size), displs(size);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string all;
  if (rank == 0) {
    for (int r = 1; r < size; ++r) displs[r] = displs[r - 1] + lens[r - 1];
    all.resize(static_cast<size_t>(displs[size - 1] + lens[size - 1]));
  }
  MPI_Gatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (rank == 0)
    for (int r = 0; r < size; ++r) out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(lens[r])));
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// True when every rank's ok is true (collective).
bool all_ok(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

int fail() {
  MPI_Finalize();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Options o;
  const std::string err = parse(argc, argv, &o);  // the same argv on every rank: all fail alike
  if (!err.empty()) {
    if (rank == 0)
      std::fprintf(stderr,
                   "sampleattn_cp_bench: %s\nusage: sampleattn_cp_bench [--seq N] [--heads H] [--kv-heads G] [--dim D]"
                   " [--dtype f32|f16|bf16] [--precision auto|f32|bf16] [--split contiguous|zigzag|balanced] [--balance A] [--balance-keys B]"
                   " [--threads T]"
                   " [--repeat R] [--warmup W] [--causal 0|1] [--method dense|sample] [--inputs DIR] [--json]\n",
                   err.c_str());
    return fail();
  }
  const sampleattn_dtype dt = o.dtype == "f32" ? SAMPLEATTN_DTYPE_F32
                              : o.dtype == "f16" ? SAMPLEATTN_DTYPE_F16 : SAMPLEATTN_DTYPE_BF16;
  const bool zigzag = o.split == "zigzag";
  const int64_t L = o.seq, P = size;
  Runs runs;
  if (zigzag) {
    auto chunk = [&](int64_t c) { return std::make_pair(c * L / (2 * P), (c + 1) * L / (2 * P)); };
    runs = {chunk(rank), chunk(2 * P - 1 - rank)};
  } else if (o.split == "balanced") {
    runs = {{balanced_cut(L, P, rank, o.balance, o.balance_keys), balanced_cut(L, P, rank + 1, o.balance, o.balance_keys)}};
  } else {
    runs = {{rank * L / P, (rank + 1) * L / P}};
  }
  const int64_t tokens = (runs[0].second - runs[0].first) + (zigzag ? runs[1].second - runs[1].first : 0);
  const std::string cpus = allowed_cpus();  // as mpirun bound this rank, before the library binds

  std::vector<unsigned char> q, k, v, out;
  bool filled = false;
  try {
    if (o.inputs.empty()) {
      q = fill(runs, 0, o.heads, o.dim, dt);
      k = fill(runs, 1, o.kv_heads, o.dim, dt);
      v = fill(runs, 2, o.kv_heads, o.dim, dt);
      filled = true;
    } else {
      std::string why = read_npy_rows(o.inputs + "/q.npy", runs, L, o.heads, o.dim, dt, &q);
      if (why.empty()) why = read_npy_rows(o.inputs + "/k.npy", runs, L, o.kv_heads, o.dim, dt, &k);
      if (why.empty()) why = read_npy_rows(o.inputs + "/v.npy", runs, L, o.kv_heads, o.dim, dt, &v);
      if (!why.empty()) std::fprintf(stderr, "rank %d: %s\n", rank, why.c_str());
      filled = why.empty();
    }
    out.resize(q.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: allocating the shard: %s\n", rank, e.what());
  }
  if (!all_ok(filled)) return fail();

  sampleattn_context_options copts;
  sampleattn_context_options_init(&copts);
  copts.backend = SAMPLEATTN_BACKEND_CPU;
  copts.num_threads = static_cast<int32_t>(o.threads);
  if (o.threads > 0) copts.binding = SAMPLEATTN_BIND_CORES;
  sampleattn_context* ctx = nullptr;
  const sampleattn_status cs = sampleattn_context_create(&copts, &ctx);
  if (cs != SAMPLEATTN_SUCCESS)
    std::fprintf(stderr, "rank %d: %s: %s\n", rank, sampleattn_status_string(cs), sampleattn_last_error());
  if (!all_ok(cs == SAMPLEATTN_SUCCESS)) {
    sampleattn_context_destroy(ctx);
    return fail();
  }
  sampleattn_context_info info;
  sampleattn_context_info_init(&info);
  sampleattn_context_get_info(ctx, &info);

  sampleattn_params p;
  sampleattn_params_init(&p);
  p.q = {q.data(), dt, o.heads * o.dim, o.dim};
  p.k = {k.data(), dt, o.kv_heads * o.dim, o.dim};
  p.v = {v.data(), dt, o.kv_heads * o.dim, o.dim};
  p.o = {out.data(), dt, o.heads * o.dim, o.dim};
  p.head_dim = static_cast<int32_t>(o.dim);
  p.num_q_heads = static_cast<int32_t>(o.heads);
  p.num_kv_heads = static_cast<int32_t>(o.kv_heads);
  p.batch = 1;
  p.seqlen_q = p.seqlen_k = L;
  p.causal = static_cast<int32_t>(o.causal);
  p.method = o.method == "sample" ? SAMPLEATTN_METHOD_SAMPLE : SAMPLEATTN_METHOD_DENSE;
  sampleattn_sample_params sample;
  sampleattn_sample_params_init(&sample);
  sample.look = static_cast<float>(o.look);
  if (o.method == "sample") p.sample = &sample;
  p.precision = o.precision == "f32" ? SAMPLEATTN_PRECISION_F32
                : o.precision == "bf16" ? SAMPLEATTN_PRECISION_BF16 : SAMPLEATTN_PRECISION_AUTO;
  sampleattn_mpi_shard shard;
  sampleattn_mpi_shard_init(&shard);
  shard.split = zigzag ? SAMPLEATTN_MPI_SPLIT_ZIGZAG : SAMPLEATTN_MPI_SPLIT_CONTIGUOUS;
  const int64_t run_begin = runs[0].first, run_length = runs[0].second - runs[0].first;
  if (o.split == "balanced") {  // explicit runs (the even split is the library's default)
    shard.begin = &run_begin;
    shard.length = &run_length;
  }

  enum { kSent, kRecv, kTotal, kAttn, kWait, kStages, kRecvQ, kRecvKv, kSampling, kCount };
  std::vector<double> times, samples[kCount];
  sampleattn_mpi_stats st;
  sampleattn_stats mask;  // method sample: the whole call's mask (the same on every rank)
  std::vector<sampleattn_head_stats> head_stats(static_cast<size_t>(o.heads));
  std::vector<int32_t> stripe_offsets(static_cast<size_t>(o.heads) + 1);
  std::vector<int32_t> stripes(o.method == "sample" ? static_cast<size_t>(o.heads * L) : 1);
  for (long it = 0; it < o.warmup + o.repeat; ++it) {
    sampleattn_mpi_stats_init(&st);
    sampleattn_stats_init(&mask);
    mask.head_stats = head_stats.data();
    mask.stripe_offsets = stripe_offsets.data();
    mask.stripes = stripes.data();
    mask.stripe_capacity = static_cast<int64_t>(stripes.size());
    if (o.method == "sample") st.sample_stats = &mask;
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    const sampleattn_status s = sampleattn_mpi_forward(ctx, MPI_COMM_WORLD, &p, &shard, &st);
    double local[2] = {MPI_Wtime() - t0, s == SAMPLEATTN_SUCCESS ? 0.0 : 1.0}, global[2];
    if (s != SAMPLEATTN_SUCCESS)
      std::fprintf(stderr, "rank %d: %s: %s\n", rank, sampleattn_status_string(s), sampleattn_mpi_last_error());
    MPI_Allreduce(local, global, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (global[1] != 0.0) {
      sampleattn_context_destroy(ctx);
      return fail();
    }
    if (it < o.warmup) continue;
    times.push_back(global[0]);
    const double row[kCount] = {static_cast<double>(st.bytes_sent), static_cast<double>(st.bytes_received),
                                st.time_total_s, st.time_attention_s, st.time_wait_s,
                                mask.time_sampling_s + mask.time_selection_s,
                                static_cast<double>(st.received_query_rows), static_cast<double>(st.received_kv_rows),
                                mask.time_sampling_s};
    for (int j = 0; j < kCount; ++j) samples[j].push_back(row[j]);
  }

  // The mask's shape as the communication model (cp_model.py) takes it: the kv groups with a
  // dense head (they fetch every earlier key) and, over the others, the mean share of the keys
  // that are a stripe of some head of the group (what the exchange moves besides the bands).
  int dense_groups = 0;
  double stripe_union = 0;
  if (o.method == "sample") {
    const long group = o.heads / o.kv_heads;
    std::vector<char> seen(static_cast<size_t>(L));
    for (long g = 0; g < o.kv_heads; ++g) {
      bool dense = false;
      std::fill(seen.begin(), seen.end(), 0);
      for (long h = g * group; h < (g + 1) * group; ++h) {
        dense = dense || head_stats[h].dense;
        for (int32_t i = stripe_offsets[h]; i < stripe_offsets[h + 1]; ++i) seen[static_cast<size_t>(stripes[i])] = 1;
      }
      if (dense) {
        ++dense_groups;
      } else {
        stripe_union += static_cast<double>(std::count(seen.begin(), seen.end(), 1)) / static_cast<double>(L);
      }
    }
    if (dense_groups < o.kv_heads) stripe_union /= static_cast<double>(o.kv_heads - dense_groups);
  }

  // Per rank, gathered to rank 0: medians over the repetitions, then the counts.
  enum { kTokens = kCount, kThreads, kSteps, kCalls, kFields };
  double mine[kFields];
  for (int j = 0; j < kCount; ++j) mine[j] = median(samples[j]);
  mine[kTokens] = static_cast<double>(tokens);
  mine[kThreads] = info.num_threads;
  mine[kSteps] = st.ring_steps;
  mine[kCalls] = st.attention_calls;
  std::vector<double> all(static_cast<size_t>(kFields) * size);
  MPI_Gather(mine, kFields, MPI_DOUBLE, all.data(), kFields, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  const std::vector<std::string> hosts = gather_strings(host, rank, size), cpu_lists = gather_strings(cpus, rank, size);
  const std::string isa = info.isa ? info.isa : "?";
  sampleattn_context_destroy(ctx);
  MPI_Finalize();
  if (rank != 0) return 0;

  const double pairs = o.causal ? 0.5 * static_cast<double>(L) * static_cast<double>(L + 1)
                                : static_cast<double>(L) * static_cast<double>(L);
  const double flops = 2.0 * static_cast<double>(o.dim + o.dim) * pairs * static_cast<double>(o.heads);
  const double med = median(times);
  if (o.json) {
    std::printf("{\"bench\":\"cp_%s\",\"version\":%s,\"ranks\":%d,\"threads_per_rank\":%ld,", o.method.c_str(),
            quoted(sampleattn_version()).c_str(), size, o.threads);
    std::printf("\"method\":\"%s\",\"inputs\":%s,\"density\":%.6f,\"dense_heads\":%d,\"heads_total\":%d,",
            o.method.c_str(), quoted(o.inputs).c_str(), o.method == "sample" ? mask.density : 1.0,
            o.method == "sample" ? mask.num_dense_heads : static_cast<int>(o.heads),
            o.method == "sample" ? mask.num_heads_total : static_cast<int>(o.heads));
    std::printf("\"dense_kv_groups\":%d,\"stripe_union\":%.6f,\"stages_s_median_rank0\":%.6f,",
            o.method == "sample" ? dense_groups : static_cast<int>(o.kv_heads), stripe_union, all[kStages]);
    std::printf("\"seq\":%lld,\"heads\":%ld,\"kv_heads\":%ld,\"dim\":%ld,\"dtype\":\"%s\",\"precision\":\"%s\",",
            static_cast<long long>(L), o.heads, o.kv_heads, o.dim, o.dtype.c_str(), o.precision.c_str());
    std::printf("\"split\":\"%s\",\"balance\":%g,\"balance_keys\":%g,\"causal\":%ld,\"isa\":%s,\"warmup\":%ld,\"repeat\":%ld,",
                o.split.c_str(), o.balance, o.balance_keys, o.causal, quoted(isa).c_str(), o.warmup, o.repeat);
    std::printf("\"look\":%g,\"dense_rows\":%lld,", o.look,
                static_cast<long long>(o.method == "sample" ? mask.num_dense_rows : 0));
    std::printf("\"flops\":%.6e,\"time_s_median\":%.6f,\"gflops\":%.3f,\"times_s\":[", flops, med, flops / med * 1e-9);
    for (size_t i = 0; i < times.size(); ++i) std::printf("%s%.6f", i ? "," : "", times[i]);
    std::fputs("],\"per_rank\":[", stdout);
    for (int r = 0; r < size; ++r) {
      const double* a = &all[static_cast<size_t>(r) * kFields];
      std::printf("%s{\"rank\":%d,\"host\":%s,\"cpus\":%s,\"threads\":%.0f,\"tokens\":%.0f,", r ? "," : "", r,
              quoted(hosts[r]).c_str(), quoted(cpu_lists[r]).c_str(), a[kThreads], a[kTokens]);
      std::printf("\"bytes_sent\":%.0f,\"bytes_received\":%.0f,\"time_total_s\":%.6f,\"time_attention_s\":%.6f,",
              a[kSent], a[kRecv], a[kTotal], a[kAttn]);
      std::printf("\"time_wait_s\":%.6f,\"time_stages_s\":%.6f,\"time_sampling_s\":%.6f,", a[kWait], a[kStages],
              a[kSampling]);
      std::printf("\"received_query_rows\":%.0f,\"received_kv_rows\":%.0f,", a[kRecvQ], a[kRecvKv]);
      std::printf("\"ring_steps\":%.0f,\"attention_calls\":%.0f}", a[kSteps], a[kCalls]);
    }
    std::fputs("]}\n", stdout);
  } else {
    std::printf("context-parallel %s prefill: %d rank(s) x %ld thread(s) (0 = library default), isa %s\n",
            o.method.c_str(), size, o.threads, isa.c_str());
    if (o.method == "sample") {
      std::printf("mask: density %.4f, %d of %d heads dense (%d of %ld kv groups), stripe union %.4f of the keys\n",
                  mask.density, mask.num_dense_heads, mask.num_heads_total, dense_groups, o.kv_heads, stripe_union);
    }
    std::printf("seq %lld, heads %ld/%ld, dim %ld, %s, precision %s, split %s, %s\n", static_cast<long long>(L),
            o.heads, o.kv_heads, o.dim, o.dtype.c_str(), o.precision.c_str(), o.split.c_str(),
            o.causal ? "causal" : "full");
    std::printf("time: median %.4f s, %.1f GFLOP/s (%.3e dense flops); all:", med, flops / med * 1e-9, flops);
    for (const double t : times) std::printf(" %.4f", t);
    std::printf("\n\n%4s %-12s %-12s %7s %9s %9s %9s %9s %9s %9s %9s %5s %5s\n", "rank", "host", "cpus", "threads",
            "tokens", "sent MB", "recv MB", "total s", "attn s", "wait s", "stages s", "steps", "calls");
    for (int r = 0; r < size; ++r) {
      const double* a = &all[static_cast<size_t>(r) * kFields];
      std::printf("%4d %-12.12s %-12s %7.0f %9.0f %9.1f %9.1f %9.4f %9.4f %9.4f %9.4f %5.0f %5.0f\n", r,
              hosts[r].c_str(), cpu_lists[r].c_str(), a[kThreads], a[kTokens], a[kSent] * 1e-6, a[kRecv] * 1e-6,
              a[kTotal], a[kAttn], a[kWait], a[kStages], a[kSteps], a[kCalls]);
    }
  }
  return 0;
}
