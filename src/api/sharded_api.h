/* The private entry of libsampleattn that libsampleattn_mpi calls for a sharded SampleAttention
 * call (docs/SCALING.md): the collective operations as callbacks, so libsampleattn never links a
 * communication library. Not part of the public ABI: exported under the version node
 * SAMPLEATTN_PRIVATE, for the libsampleattn_mpi of the same release only; it may change with any
 * release. */
#ifndef SAMPLEATTN_SHARDED_API_H_
#define SAMPLEATTN_SHARDED_API_H_

#include "sampleattn/sampleattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The operations of core/collective.h. Every process of the call calls them in the same order with
 * the same sizes. A callback returns SAMPLEATTN_SUCCESS or an error code, with its message in
 * `error` (the library copies it). */
typedef struct sampleattn_private_collective {
  void* state;
  int32_t rank;
  int32_t size;
  sampleattn_status (*sum_i64)(void* state, int64_t* values, int64_t n, const char** error);
  sampleattn_status (*sum_f64)(void* state, double* values, int64_t n, const char** error);
  sampleattn_status (*max_f32)(void* state, float* values, int64_t n, const char** error);
  sampleattn_status (*all_gather)(void* state, const void* send, void* recv, const int64_t* recv_bytes,
                                  const char** error);
  sampleattn_status (*all_to_all)(void* state, const void* send, const int64_t* send_bytes, void* recv,
                                  const int64_t* recv_bytes, int32_t payload, const char** error);
} sampleattn_private_collective;

/* What an all_to_all moves (its `payload`). */
enum { SAMPLEATTN_PRIVATE_QUERY_ROWS = 0, SAMPLEATTN_PRIVATE_KV_ROWS = 1 };

/* A run of positions [begin, end) of sequence `seq`, held by process `process` at its local token
 * `local`. */
typedef struct sampleattn_private_run {
  int32_t seq;
  int32_t process;
  int64_t begin;
  int64_t end;
  int64_t local;
} sampleattn_private_run;

/* params: the global batch (its cu_seqlens or seqlens over the whole sequences; q_len == k_len,
 * causal, method sample) with this process's tensors and strides: its tokens are its runs laid end
 * to end (their `local` offsets); a process without tokens may pass NULL tensors. runs: every
 * process's runs. stats (optional): the whole call's mask statistics, the same on every process. */
SAMPLEATTN_API sampleattn_status sampleattn_private_sharded_forward(sampleattn_context* context,
                                                                    const sampleattn_params* params,
                                                                    const sampleattn_private_run* runs, int64_t num_runs,
                                                                    const sampleattn_private_collective* collective,
                                                                    sampleattn_stats* stats);

#ifdef __cplusplus
}
#endif

#endif
