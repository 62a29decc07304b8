/*
 * sampleattn: sparse (SampleAttention) and dense prefill attention for CPUs and NVIDIA GPUs.
 *
 * This is the stable C ABI. Every call returns a sampleattn_status; the library never prints,
 * never aborts and never lets an exception cross this boundary. On failure,
 * sampleattn_last_error() returns a message for the calling thread describing what was wrong.
 *
 * Life cycle: sampleattn_context_create (backend, threads) -> sampleattn_plan (validate a call,
 * report its workspace) -> sampleattn_forward (run it) -> sampleattn_context_destroy.
 *
 * Threading contract: a context may be used from several application threads at once. Calls on
 * one CPU context share its worker pool and run one after another (each call uses every worker);
 * calls on different contexts run concurrently. sampleattn_last_error() is per thread.
 *
 * ABI (docs/ABI.md): the shared library is libsampleattn.so.1 and its symbols carry the version
 * node SAMPLEATTN_1. Structs that cross the ABI begin with struct_size and only ever grow at the
 * end. Fill them with the matching *_init() macro: it passes the caller's sizeof, so the library
 * writes only that many bytes and records them in struct_size. A struct_size smaller than this
 * header's (a caller built against an older header) is accepted down to the first ABI 1 layout:
 * the fields it lacks take their defaults and are not written back. A struct_size larger than the
 * library knows (a caller built against a newer header than the library it runs with) fails with
 * SAMPLEATTN_UNSUPPORTED_VERSION. Nested parameter structs are reached through pointers, so a
 * struct that grows never moves the fields of another.
 */
#ifndef SAMPLEATTN_SAMPLEATTN_H_
#define SAMPLEATTN_SAMPLEATTN_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define SAMPLEATTN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SAMPLEATTN_API __attribute__((visibility("default")))
#else
#define SAMPLEATTN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define SAMPLEATTN_VERSION_MAJOR 0
#define SAMPLEATTN_VERSION_MINOR 5
#define SAMPLEATTN_VERSION_PATCH 0
/* The ABI: the shared library's SONAME number, and the layout revision of this header's structs
 * (docs/ABI.md lists what each revision appended). */
#define SAMPLEATTN_ABI_VERSION 1
#define SAMPLEATTN_ABI_REVISION 6

/* ---------------------------------------------------------------------------------------------
 * Status
 * ------------------------------------------------------------------------------------------- */
typedef enum sampleattn_status {
  SAMPLEATTN_SUCCESS = 0,
  SAMPLEATTN_INVALID_ARGUMENT = 1,     /* a value out of range or NaN (scale, alpha, counts...) */
  SAMPLEATTN_NULL_POINTER = 2,         /* a required pointer is NULL */
  SAMPLEATTN_INVALID_SHAPE = 3,        /* sequence lengths, heads or strides that do not fit */
  SAMPLEATTN_UNSUPPORTED_HEAD_DIM = 4, /* head_dim not one the library supports (the message lists them) */
  SAMPLEATTN_UNSUPPORTED_DTYPE = 5,    /* a dtype this backend cannot read or write */
  SAMPLEATTN_UNSUPPORTED_BACKEND = 6,  /* backend not compiled in, or no device present */
  SAMPLEATTN_OUT_OF_MEMORY = 7,        /* allocation failed or workspace over the context limit */
  SAMPLEATTN_DEVICE_ERROR = 8,         /* the CUDA runtime reported an error */
  SAMPLEATTN_INTERNAL_ERROR = 9,       /* a bug: please report it with sampleattn_last_error() */
  SAMPLEATTN_UNSUPPORTED_VERSION = 10  /* a struct_size from a newer header than this library */
} sampleattn_status;

/* A static string naming the status, e.g. "SAMPLEATTN_INVALID_SHAPE". Never NULL. */
SAMPLEATTN_API const char* sampleattn_status_string(sampleattn_status status);

/* The message of the last failed call made by this thread ("" if none). Valid until the next
 * call into the library from this thread. */
SAMPLEATTN_API const char* sampleattn_last_error(void);

/* The library's version, e.g. "0.5.0" (SAMPLEATTN_VERSION_* are the header's). */
SAMPLEATTN_API const char* sampleattn_version(void);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */
typedef enum sampleattn_backend {
  SAMPLEATTN_BACKEND_AUTO = 0, /* CUDA when compiled in and a device exists, else CPU */
  SAMPLEATTN_BACKEND_CPU = 1,
  SAMPLEATTN_BACKEND_CUDA = 2
} sampleattn_backend;

typedef enum sampleattn_binding {
  SAMPLEATTN_BIND_CORES = 0, /* one worker per core, each bound to its core (default); fewer workers
                                 than the allowed cores are not bound (docs/THREADS.md) */
  SAMPLEATTN_BIND_NONE = 1   /* workers float; the OS schedules them */
} sampleattn_binding;

/* A host thread pool's parallel-for (ABI 1.4, sampleattn_context_options.parallel_for). */
typedef void (*sampleattn_task_fn)(void* task_context, int64_t index);
typedef void (*sampleattn_parallel_for_fn)(void* host_pool, sampleattn_task_fn task, void* task_context,
                                           int64_t count);

typedef struct sampleattn_context_options {
  uint32_t struct_size;
  sampleattn_backend backend; /* default AUTO */
  /* CPU worker threads. 0 (default): SAMPLEATTN_NUM_THREADS if set, else one per core that the
   * process may run on (taskset and cgroup cpusets are respected), and no more than a cgroup CPU
   * quota allows (cpu.max, rounded up). */
  int32_t num_threads;
  sampleattn_binding binding; /* default BIND_CORES */
  int32_t cuda_device;        /* default 0 */
  /* Upper bound on scratch memory the context may hold, in bytes; 0 = no limit. CPU: everything
   * a call allocates, added up at its peak, and what the context keeps of it for the next call
   * (docs/SECURITY.md, Memory). A call whose workspace
   * would exceed it fails with SAMPLEATTN_OUT_OF_MEMORY before allocating the part that would
   * pass it and before writing any output. */
  uint64_t max_workspace_bytes;
  /* ABI revision 1.4: run on the host's own threads (CPU backend). When parallel_for is set, the
   * context starts no thread of its own: each parallel step of a call runs as
   * parallel_for(host_pool, task, task_context, count), which must call task(task_context, i)
   * exactly once for every i in [0, count) -- on any of the host's threads, in any order, at once
   * or one after another -- and return when the last has returned. count is at most num_threads,
   * which must then be > 0 (the host's worker count); binding is ignored (the host places its
   * threads). Calls on one context still run one at a time. NULL (default): the library's pool. */
  sampleattn_parallel_for_fn parallel_for;
  void* host_pool; /* passed back to parallel_for as is */
} sampleattn_context_options;

typedef struct sampleattn_context sampleattn_context;

/* The *_init functions take the caller's struct size; call them through the macros, which pass
 * sizeof(*ptr). They write exactly `size` bytes (nothing when size is smaller than the first
 * layout or larger than the library's struct, or ptr is NULL). */
SAMPLEATTN_API void sampleattn_context_options_init_sized(sampleattn_context_options* options, size_t size);
#define sampleattn_context_options_init(options) \
  sampleattn_context_options_init_sized((options), sizeof(*(options)))

/* options may be NULL for the defaults. With backend CUDA and no usable device this fails with
 * SAMPLEATTN_UNSUPPORTED_BACKEND; with AUTO it falls back to the CPU (see sampleattn_context_info). */
SAMPLEATTN_API sampleattn_status sampleattn_context_create(const sampleattn_context_options* options,
                                                           sampleattn_context** context);
SAMPLEATTN_API void sampleattn_context_destroy(sampleattn_context* context);

typedef struct sampleattn_context_info {
  uint32_t struct_size;
  sampleattn_backend backend; /* the backend actually in use (never AUTO) */
  int32_t num_threads;        /* CPU workers */
  int32_t num_numa_nodes;     /* NUMA nodes the workers span */
  const char* isa;            /* kernel table in use: a CPU table, e.g. "avx2" (the ISA list: docs/KERNELS.md), or "cuda" */
  const char* device_name;    /* CUDA device name, or "" */
  const char* note;           /* why AUTO chose what it chose, e.g. "no CUDA device found" */
  /* ABI revision 1.1. The strings live as long as the context. */
  sampleattn_binding binding; /* the binding in effect: CORES binds the CPU workers when they cover the
                               * allowed cores, NONE never (a host pool: NONE) */
  const char* cpu_model;      /* e.g. "Intel(R) Xeon(R) Platinum 8480+" */
  /* The CPU kernel tables this CPU can run, best first, with their products, e.g.
   * "avx512 (f32 fma, bf16 dot), avx2 (f32 fma), scalar". */
  const char* cpu_tables;
  /* Each backend: compiled or not, found or not and why, e.g. "cpu: in use; cuda: module
   * /usr/lib/x86_64-linux-gnu/libsampleattn_cuda.so.1 loaded, no CUDA device". */
  const char* backends;
  /* The SAMPLEATTN_* environment variables the library read, and any it rejected with the reason,
   * e.g. "SAMPLEATTN_ISA=bogus rejected (not one of: scalar, avx2, avx512)"; "" when none. */
  const char* environment;
} sampleattn_context_info;

SAMPLEATTN_API void sampleattn_context_info_init_sized(sampleattn_context_info* info, size_t size);
#define sampleattn_context_info_init(info) sampleattn_context_info_init_sized((info), sizeof(*(info)))
SAMPLEATTN_API sampleattn_status sampleattn_context_get_info(const sampleattn_context* context,
                                                             sampleattn_context_info* info);

/* ---------------------------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------------------------- */
typedef enum sampleattn_dtype {
  SAMPLEATTN_DTYPE_F32 = 0,
  SAMPLEATTN_DTYPE_F16 = 1, /* IEEE binary16 */
  SAMPLEATTN_DTYPE_BF16 = 2, /* bfloat16, the upper half of an f32 */
  /* ABI 1.4, quantized K and V only (a KV cache; the scales are in sampleattn_kv_cache): a stored
   * x stands for scale * x. */
  SAMPLEATTN_DTYPE_I8 = 3,       /* int8 */
  SAMPLEATTN_DTYPE_FP8_E4M3 = 4  /* OCP fp8 e4m3 ("e4m3fn": max 448, no infinity, 0x7f/0xff NaN) */
} sampleattn_dtype;

/* One of Q, K, V: [token, head, dim] with the dim contiguous. Strides are in elements; the token
 * stride runs over the concatenated tokens of all sequences of a batch. For the CUDA backend,
 * data is a device pointer. */
typedef struct sampleattn_tensor {
  const void* data;
  sampleattn_dtype dtype;
  int64_t token_stride;
  int64_t head_stride;
} sampleattn_tensor;

/* The output O: [token, q_head, dim], laid out like the queries. */
typedef struct sampleattn_output {
  void* data;
  sampleattn_dtype dtype;
  int64_t token_stride;
  int64_t head_stride;
} sampleattn_output;

/* ABI revision 1.4: the KV cache as engines keep it (sampleattn_params.kv_cache; NULL = K and V
 * packed per batch as cu_seqlens_k says, in f32/f16/bf16).
 *
 * Paged: with block_table set, sequence b's key j (0-based, its position in the sequence) lives in
 * page block_table[b * block_table_stride + j / page_size], slot j % page_size: k element
 * (page, slot, head, c) is at k.data + page * k_page_stride + slot * k.token_stride +
 * head * k.head_stride + c (likewise v), as flash-attention's paged cache
 * [num_pages, page_size, kv_heads, head_dim] or vLLM's blocks with any strides. Sequence b has
 * seqused_k[b] keys when seqused_k is set, else the count cu_seqlens_k (or seqlen_k) gives; its
 * first ceil(keys / page_size) table entries must be pages in [0, num_pages). Pages may repeat
 * across sequences (a shared prefix) and appear in any order.
 *
 * Quantized: k.dtype / v.dtype SAMPLEATTN_DTYPE_I8 or FP8_E4M3 need k_scale / v_scale, f32 scales
 * addressed like the rows they scale: the scale of (token or page+slot, head) is at
 * scale + [page * scale_page_stride +] token_or_slot * scale_token_stride + head * scale_head_stride.
 * int8 per (token, kv head): scale_token_stride = num_kv_heads, scale_head_stride = 1; fp8 per kv
 * head: scale_token_stride = scale_page_stride = 0, scale_head_stride = 1. Scales must be finite.
 * Host arrays (block_table, seqused_k) are read during the call only; the scales are device memory
 * for the CUDA backend, like K and V. */
typedef struct sampleattn_kv_cache {
  uint32_t struct_size;
  const int32_t* block_table;  /* NULL: packed K/V */
  int64_t block_table_stride;  /* entries per sequence in block_table */
  int32_t page_size;           /* tokens per page: a multiple of 16 */
  int32_t num_pages;           /* pages in the cache; every used table entry is below it */
  int64_t k_page_stride;       /* elements from one page of k to the next */
  int64_t v_page_stride;
  const int32_t* seqused_k;    /* [batch] keys per sequence, or NULL */
  const float* k_scale;        /* quantized k: its scales (NULL otherwise) */
  const float* v_scale;
  int64_t scale_token_stride;
  int64_t scale_head_stride;
  int64_t scale_page_stride;
} sampleattn_kv_cache;

SAMPLEATTN_API void sampleattn_kv_cache_init_sized(sampleattn_kv_cache* cache, size_t size);
#define sampleattn_kv_cache_init(cache) sampleattn_kv_cache_init_sized((cache), sizeof(*(cache)))

/* ---------------------------------------------------------------------------------------------
 * Method parameters
 * ------------------------------------------------------------------------------------------- */
typedef enum sampleattn_method {
  SAMPLEATTN_METHOD_DENSE = 0, /* exact attention */
  SAMPLEATTN_METHOD_SAMPLE = 1 /* SampleAttention: local window + sampled column stripes */
} sampleattn_method;

typedef enum sampleattn_precision {
  /* f32 products everywhere (inputs of any dtype are widened to f32). */
  SAMPLEATTN_PRECISION_F32 = 0,
  /* bf16 products with f32 accumulation: Q (scaled), K, V and the probabilities P are rounded to
   * bf16 before their products (AMX tiles, or vdpbf16ps). Used only on CPUs with avx512_bf16,
   * else F32 runs. Its error is that of a bf16 attention (docs/ACCURACY.md). */
  SAMPLEATTN_PRECISION_BF16 = 1,
  /* ABI revision 1.5, the default: the products users of bf16 models expect. bf16 Q, K and V run
   * BF16 on a CPU table whose bf16 products are its fastest (AMX tiles; vdpbf16ps on AMD Zen 4
   * and later), F32 elsewhere; f16 and f32 inputs, and quantized K/V, run F32, except that on a
   * CPU with AVX512_VNNI the decode steps (short query chunks) multiply int8 K/V in integers, Q
   * and the probabilities rounded to int16 per row (an error about 1/150 of int8's own rounding;
   * under BF16 too, not under F32). The CUDA backend runs its tensor cores in the inputs' 16-bit
   * type under every precision. stats.precision says what ran, the path of the prefill chunks
   * (docs/KERNELS.md has the rule). */
  SAMPLEATTN_PRECISION_AUTO = 2
} sampleattn_precision;

typedef enum sampleattn_stripe_scope {
  /* Each query head selects its own stripe columns (the paper's rule). */
  SAMPLEATTN_STRIPES_PER_HEAD = 0,
  /* The query heads of one kv head sum their column scores and share one stripe set, so the
   * stripe K/V columns are gathered once per group. */
  SAMPLEATTN_STRIPES_PER_KV_GROUP = 1
} sampleattn_stripe_scope;

typedef struct sampleattn_sample_params {
  uint32_t struct_size;
  /* Stage 2: keep the fewest key columns whose summed sampled score reaches alpha of the total.
   * (0, 1]; default 0.95. */
  float alpha;
  /* Stage 1: fraction of the query rows that are sampled, in strided blocks with the last block
   * always included. (0, 1]; default 0.05. */
  float r_row;
  /* Local window: each query sees its ceil(r_w * k_len) nearest preceding keys. [0, 1];
   * default 0.08. */
  float r_w;
  int32_t min_window;         /* lower bound on the window, in keys; default 64 */
  int32_t sample_block;       /* rows per sampled block; default 64 */
  int32_t min_stripes;        /* default 0 */
  int32_t max_stripes;        /* 0 = no limit; default 0 */
  int32_t sink_tokens;        /* always keep the first k keys as stripes; default 4 */
  int32_t dense_below;        /* sequences with k_len below this run dense; default 2048 */
  sampleattn_stripe_scope scope; /* default PER_HEAD */
  /* 1: the mass each sampled row puts inside its own window counts as already covered when
   * stripes are chosen (fewer stripes for the same alpha). 0 (default): the paper's rule, the
   * cumulative score over all columns. */
  int32_t window_mass_counts;
  /* A head (or kv group, with scope PER_KV_GROUP) whose window + stripes would compute more
   * than this fraction of its causal query-key pairs runs dense instead: there the mask saves
   * little time, and such heads are the diffuse ones, where a column mask keeps the least
   * attention mass. The statistics report the head dense. (0, 1]; 1 = never; default 0.5.
   * ABI 1.2: with validation on (r_val > 0) this is the cost budget of a mask: a head runs sparse
   * only while window + stripes compute at most this fraction of the causal pairs (the sparse
   * path costs about what dense does per computed pair, docs/PERF.md); default 0.8. */
  float max_density;
  /* ABI revision 1.2: validation (docs/ALGORITHM.md, step 4). val_rows query rows (at most a
   * fraction r_val of them), single rows spread over the sequence and disjoint from the sampled
   * blocks, are kept aside: the stripes are chosen without them, then their exact attention says
   * how much of their mass the mask keeps. A head whose validation rows fall short (min_kept,
   * max_lost) gets more stripes (the next ones of the same ranking), up to the cost budget; when
   * even that falls short it runs dense. r_val in [0, 1), default 0.02 (what short sequences pay
   * at most); 0 = no validation (stripes as alpha chose them, dense only by max_density). */
  float r_val;
  /* The kept mass the validation rows' 5th percentile must reach. [0, 1]; default 0.9. */
  float min_kept;
  /* The most the validation rows' root-mean-square lost mass, sqrt(mean (1 - kept)^2), may be:
   * a row that loses m of its mass is off by about m times the distance between the kept and the
   * lost values, so this bounds the head's relative error in practice. [0, 1]; 1 = no bound;
   * default 0.01. */
  float max_lost;
  /* The validation rows wanted: the statistics need a number of rows, not a share (>= 0; 0 = no
   * validation); default 384. */
  int32_t val_rows;
  /* ABI revision 1.6: the look at every row (docs/ALGORITHM.md, step 5), in nats: a row of a
   * sparse head whose largest score outside its window band and stripes comes within `look` of its
   * mask's largest score (band, stripes, sinks) attends over every key it sees (a rare row that
   * fetches a far key of its own, which neither the stripes nor the validation rows can catch).
   * Rows are looked at through a probe first (an eighth of a long head's rows); a head is looked
   * at whole only when the probe flags one of its rows in 1,024 or more. >= 0, finite; 0
   * (default) = no look. Both backends, and sharded calls (libsampleattn_mpi) since 2026-12-05. */
  float look;
} sampleattn_sample_params;

SAMPLEATTN_API void sampleattn_sample_params_init_sized(sampleattn_sample_params* params, size_t size);
#define sampleattn_sample_params_init(params) \
  sampleattn_sample_params_init_sized((params), sizeof(*(params)))

/* ---------------------------------------------------------------------------------------------
 * One attention call
 * ------------------------------------------------------------------------------------------- */
typedef struct sampleattn_params {
  uint32_t struct_size;
  sampleattn_tensor q, k, v;
  sampleattn_output o;
  int32_t head_dim;     /* of q and k (and v unless head_dim_v is set): the head-dim list
                         * (docs/KERNELS.md), every multiple of 16 from 32 to 256 */
  int32_t num_q_heads;  /* query heads */
  int32_t num_kv_heads; /* key/value heads; num_q_heads must be a multiple (grouped-query) */
  /* Sequences. batch = 1 with cu_seqlens_q == cu_seqlens_k == NULL: one sequence of seqlen_q
   * queries and seqlen_k keys. Otherwise cu_seqlens_q/k are host arrays of batch + 1
   * non-decreasing offsets starting at 0 (as in flash-attention's varlen API); sequence b has
   * queries cu_seqlens_q[b] .. cu_seqlens_q[b+1] and keys cu_seqlens_k[b] .. cu_seqlens_k[b+1].
   * Chunked prefill: when a sequence has fewer queries than keys, its queries are the last ones,
   * so query i sees keys 0 .. k_len - q_len + i (causal). q_len > k_len is invalid when causal. */
  int32_t batch;
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  int64_t seqlen_q;
  int64_t seqlen_k;
  float softmax_scale; /* 0 (default) = 1 / sqrt(head_dim); must be finite and > 0 otherwise */
  int32_t causal;      /* default 1 */
  sampleattn_method method;       /* default DENSE */
  sampleattn_precision precision; /* default AUTO (F32 before ABI revision 1.5) */
  /* SampleAttention's parameters (method SAMPLE): NULL = the defaults of
   * sampleattn_sample_params_init. Read during the call only. */
  const sampleattn_sample_params* sample;
  /* Optional: the natural-log sum of exp(scale * q.k) over the keys each row attended to,
   * f32 [total_q_tokens, num_q_heads], so that an engine can merge partial results. -inf for a
   * row that saw no key (its output row is then 0). NULL to skip. Device memory for CUDA. */
  float* lse;
  /* CUDA backend: a cudaStream_t to run on (NULL = the default stream). Ignored on the CPU. */
  void* stream;
  /* ABI revision 1.3: the attention variants of current models (docs/ALGORITHM.md, "Model
   * variants"). They are the model's semantics, whatever the method: SampleAttention samples,
   * selects and validates on the scores they give, inside what the model sees. */
  /* Value (and output) head size: 0 (default) = head_dim; else one of the head-dim list, e.g.
   * 128 with head_dim 192 (DeepSeek's MLA prefill). v and o rows hold head_dim_v elements. */
  int32_t head_dim_v;
  /* The model's sliding window, as flash-attention's window_size left: the query at position p
   * sees the keys p - window_left .. p (window_left + 1 keys at most). -1 (default) = none;
   * needs causal = 1 otherwise. */
  int64_t window_left;
  /* Logit softcap (Gemma 2): a score s = scale * q.k becomes softcap * tanh(s / softcap) before
   * the softmax. 0 (default) = none; finite and > 0 otherwise. */
  float softcap;
  /* ALiBi: NULL (default) or a host array of num_q_heads finite slopes; query head h adds
   * -slope[h] * |p - j| (natural-log units) to the score of key j, after the softcap. */
  const float* alibi_slopes;
  /* Learned sinks (gpt-oss): NULL (default) or a host array of num_q_heads logits (natural-log
   * units, not scaled by softmax_scale; -inf = no sink for that head): each adds exp(sink[h]) to
   * the softmax denominator of every row of head h, with no value. lse includes it. */
  const float* sinks;
  /* ABI revision 1.4: paged and/or quantized K/V (sampleattn_kv_cache above); NULL (default) =
   * packed K/V in f32, f16 or bf16. Read during the call only. */
  const sampleattn_kv_cache* kv_cache;
} sampleattn_params;

SAMPLEATTN_API void sampleattn_params_init_sized(sampleattn_params* params, size_t size);
#define sampleattn_params_init(params) sampleattn_params_init_sized((params), sizeof(*(params)))

/* ---------------------------------------------------------------------------------------------
 * Statistics and the chosen mask
 * ------------------------------------------------------------------------------------------- */
/* Per (sequence, query head), in the order b * num_q_heads + h. An array element without
 * struct_size: it grows only at the end, and the caller passes its size in
 * sampleattn_stats.head_stats_size (sampleattn_stats_init sets it). */
typedef struct sampleattn_head_stats {
  int32_t window;      /* keys in the local window (k_len for a dense head) */
  int32_t num_stripes; /* stripe columns selected (0 for a dense head) */
  int32_t dense;       /* 1 when this head ran dense: method dense, k_len < dense_below, or its
                        * mask would have computed more than max_density of the pairs */
  float density;       /* fraction of the causal query-key pairs that were computed */
  float cra_min;       /* kept share of the sampled rows' attention mass: min and mean */
  float cra_mean;
  /* ABI revision 1.2. The kept share of the validation rows' mass (rows that did not choose the
   * stripes: the honest figure): min, 1st and 5th percentile, mean. 1 for a dense head; -1 for a
   * sparse head without validation rows (r_val = 0, or every row sampled). */
  float val_cra_min;
  float val_cra_p1;
  float val_cra_p5;
  float val_cra_mean;
  float val_lost_rms;    /* sqrt(mean (1 - kept)^2) over the validation rows (0 dense, -1 none) */
  int32_t decision;      /* why the head ran as it did: a sampleattn_head_decision */
  int32_t alpha_stripes; /* stripes alpha alone chose (before validation widened them) */
  /* ABI revision 1.6. Query rows of a sparse head that the look (sample.look) sent dense: rows
   * that attended over every key they see (0 for a dense head, or without the look). */
  int32_t dense_rows;
} sampleattn_head_stats;

/* sampleattn_head_stats.decision. */
typedef enum sampleattn_head_decision {
  SAMPLEATTN_DECISION_SPARSE = 0,          /* window + the stripes alpha chose */
  SAMPLEATTN_DECISION_SPARSE_WIDENED = 1,  /* more stripes than alpha chose, for the validation rows */
  SAMPLEATTN_DECISION_DENSE_METHOD = 2,    /* method dense */
  SAMPLEATTN_DECISION_DENSE_SHORT = 3,     /* k_len below dense_below, or at most 16 queries (ABI 1.4; a decode step) */
  SAMPLEATTN_DECISION_DENSE_COST = 4,      /* the mask alpha chose costs more than max_density */
  SAMPLEATTN_DECISION_DENSE_VALIDATION = 5, /* no mask within max_density keeps min_kept of the validation rows */
  SAMPLEATTN_DECISION_DENSE_WINDOW = 6,     /* ABI 1.3: the model's window_left is no wider than the local window */
  SAMPLEATTN_DECISION_DENSE_LOOK = 7        /* ABI 1.6: the look's cost (an eighth of the pairs) or its dense rows took the mask past max_density */
} sampleattn_head_decision;

typedef struct sampleattn_stats {
  uint32_t struct_size;
  /* Filled by the library. */
  double time_total_s;
  double time_sampling_s;  /* stage 1 */
  double time_selection_s; /* stage 2 */
  double time_attention_s; /* the (sparse or dense) attention */
  double density;          /* computed pairs over causal pairs, all heads */
  double stripes_mean;     /* mean stripe count over sampled heads */
  float cra_min;           /* min over heads of cra_min (1 when all dense) */
  int32_t num_dense_heads; /* heads that ran dense */
  int32_t num_heads_total; /* batch * num_q_heads */
  const char* isa;         /* kernel table that ran: a CPU table name, or "cuda" */
  /* Optional caller arrays. head_stats: batch * num_q_heads entries, or NULL. */
  sampleattn_head_stats* head_stats;
  /* The chosen mask for inspection: stripe key positions (relative to the sequence start),
   * ascending per head, concatenated in head order; stripe_offsets has batch * num_q_heads + 1
   * entries. If stripe_capacity is too small, stripes_required says how many are needed and
   * the stripes are not written (the call still succeeds). */
  int32_t* stripe_offsets;
  int32_t* stripes;
  int64_t stripe_capacity;
  int64_t stripes_required;
  /* ABI revision 1.1. The size of one element of the caller's head_stats array (its stride), so
   * that sampleattn_head_stats can grow like the other structs: the library writes that many
   * bytes of each. sampleattn_stats_init() sets it to this header's sizeof(sampleattn_head_stats);
   * a caller whose stats lack this field gets the first layout's 24 bytes. */
  uint32_t head_stats_size;
  /* ABI revision 1.2. The validation rows' kept mass over the heads (dense heads count 1): the
   * smallest head min, the smallest head 5th percentile, the mean of the head means; -1 when no
   * sparse head had validation rows. */
  float val_cra_min;
  float val_cra_p5;
  float val_cra_mean;
  int32_t num_widened_heads; /* sparse heads that got more stripes than alpha chose */
  /* ABI revision 1.5. The products the attention ran: "f32" or "bf16" (CPU), "f16" or "bf16"
   * (CUDA tensor cores); what params.precision AUTO resolved to. */
  const char* precision;
  /* ABI revision 1.6. Query rows the look sent dense, over all heads (sample.look > 0); the
   * look's time is part of time_selection_s. */
  int64_t num_dense_rows;
  /* ABI revision 1.6. Those rows for inspection, as the stripes are: query indices within their
   * sequence (0 = its first query), ascending per head, concatenated in head order;
   * dense_row_offsets has batch * num_q_heads + 1 entries. Written when both are set and
   * dense_row_capacity >= num_dense_rows (else none are, and the call still succeeds). */
  int32_t* dense_row_offsets;
  int32_t* dense_row_indices;
  int64_t dense_row_capacity;
} sampleattn_stats;

SAMPLEATTN_API void sampleattn_stats_init_sized(sampleattn_stats* stats, size_t size);
#define sampleattn_stats_init(stats)                                                       \
  do {                                                                                     \
    sampleattn_stats* const sampleattn_stats_init_ptr_ = (stats);                          \
    sampleattn_stats_init_sized(sampleattn_stats_init_ptr_, sizeof(sampleattn_stats));      \
    if (sampleattn_stats_init_ptr_ != NULL) {                                              \
      sampleattn_stats_init_ptr_->head_stats_size = (uint32_t)sizeof(sampleattn_head_stats); \
    }                                                                                      \
  } while (0)

/* ---------------------------------------------------------------------------------------------
 * Plan and run
 * ------------------------------------------------------------------------------------------- */
typedef struct sampleattn_plan_info {
  uint32_t struct_size;
  uint64_t workspace_bytes; /* the most the call holds at once, all workers together; CPU:
                             * without the packed stripe K/V, known only after stage 2 */
  int64_t total_q_tokens;
  int64_t total_k_tokens;
  double dense_flops; /* 2 * (head_dim + head_dim_v) * (query-key pairs a dense attention computes:
                       * causal within the model window, or full) */
} sampleattn_plan_info;

SAMPLEATTN_API void sampleattn_plan_info_init_sized(sampleattn_plan_info* info, size_t size);
#define sampleattn_plan_info_init(info) sampleattn_plan_info_init_sized((info), sizeof(*(info)))

/* Validates every field of params except the data pointers and reports the workspace. */
SAMPLEATTN_API sampleattn_status sampleattn_plan(sampleattn_context* context,
                                                 const sampleattn_params* params,
                                                 sampleattn_plan_info* info);

/* Validates params and computes O (and lse when asked). stats may be NULL. */
SAMPLEATTN_API sampleattn_status sampleattn_forward(sampleattn_context* context,
                                                    const sampleattn_params* params,
                                                    sampleattn_stats* stats);

#ifdef __cplusplus
}
#endif

#endif /* SAMPLEATTN_SAMPLEATTN_H_ */
