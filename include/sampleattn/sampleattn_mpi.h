/*
 * sampleattn_mpi: context-parallel prefill attention over MPI (libsampleattn_mpi, built when MPI
 * is found; libsampleattn itself never needs MPI). docs/SCALING.md has the design and its costs.
 *
 * The ranks of a communicator each hold a shard of every sequence of a batch: Q, K and V of the
 * same positions. One collective call computes every rank's output rows (and lse) as one process
 * holding the whole sequence would. Method DENSE: K/V blocks travel around a ring of the ranks,
 * each block's transfer to the next rank posted before this rank attends to it, and the partial
 * results are merged by their log-sum-exp. Method SAMPLE: SampleAttention with the mask one process
 * would choose (each rank scores the sampled rows against its own keys; the stripes are selected
 * without gathering the column scores; each rank fetches only the K/V rows its masks read).
 *
 * Collective: every rank of comm calls sampleattn_mpi_forward with the same global shapes and
 * parameters, each with its own shard's tensors and its own context (a CPU context of
 * libsampleattn; CUDA contexts are refused). When any rank's arguments are invalid, or the ranks
 * disagree, every rank returns an error (none hangs and none writes output): the rank at fault its
 * own status and message, the others the same status with "rank N: <message>". Errors of MPI
 * itself are reported as SAMPLEATTN_INTERNAL_ERROR with MPI's error string when the
 * communicator's error handler returns them (MPI_ERRORS_ARE_FATAL, MPI's default, aborts the job
 * first).
 *
 * Like libsampleattn it never prints, never aborts and lets no exception out. The message of a
 * failed call is sampleattn_mpi_last_error() (per thread; it includes libsampleattn's message when
 * one of its calls failed).
 */
#ifndef SAMPLEATTN_SAMPLEATTN_MPI_H_
#define SAMPLEATTN_SAMPLEATTN_MPI_H_

#include <mpi.h>

#include "sampleattn/sampleattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the positions of each sequence are divided among the P ranks of the communicator. */
typedef enum sampleattn_mpi_split {
  /* Rank r holds one run of positions of each sequence. By default (begin/length NULL) the even
   * split: [floor(r L / P), floor((r + 1) L / P)) of a sequence of L tokens. With causal
   * attention the last rank computes most (its queries see the most keys). */
  SAMPLEATTN_MPI_SPLIT_CONTIGUOUS = 0,
  /* The load-balanced split for causal attention: each sequence cut into 2P chunks, chunk c being
   * [floor(c L / 2P), floor((c + 1) L / 2P)); rank r holds chunk r followed by chunk 2P - 1 - r,
   * so that every rank computes the same number of causal pairs. */
  SAMPLEATTN_MPI_SPLIT_ZIGZAG = 1
} sampleattn_mpi_split;

typedef struct sampleattn_mpi_shard {
  uint32_t struct_size;
  sampleattn_mpi_split split; /* default CONTIGUOUS */
  /* CONTIGUOUS only, optional: this rank's run of sequence b is positions
   * [begin[b], begin[b] + length[b]) (host arrays of batch entries; a run may be empty). The runs
   * of all ranks must cover each sequence exactly once, in any order of ranks. NULL (both): the
   * even split. */
  const int64_t* begin;
  const int64_t* length;
} sampleattn_mpi_shard;

/* The message of this thread's last failed sampleattn_mpi_* call ("" if none). */
SAMPLEATTN_API const char* sampleattn_mpi_last_error(void);

SAMPLEATTN_API void sampleattn_mpi_shard_init_sized(sampleattn_mpi_shard* shard, size_t size);
#define sampleattn_mpi_shard_init(shard) sampleattn_mpi_shard_init_sized((shard), sizeof(*(shard)))

/* What one rank did in a call. */
typedef struct sampleattn_mpi_stats {
  uint32_t struct_size;
  double time_total_s;      /* the whole call on this rank */
  double time_attention_s;  /* in libsampleattn's attention calls */
  double time_wait_s;       /* waiting for a transfer that computing did not cover, and for the ranks' agreement */
  uint64_t bytes_sent;      /* payload this rank sent (K/V blocks; the small agreement messages excluded) */
  uint64_t bytes_received;
  int32_t ring_steps;       /* blocks attended to (the ranks) */
  int32_t attention_calls;  /* libsampleattn calls made (pairs of runs that see each other) */
  /* Method sample (appended in libsampleattn_mpi 1.1): when set, libsampleattn's statistics of the
   * whole call's mask (heads, decisions, stripes; its caller arrays are filled as by
   * sampleattn_forward), the same on every rank. For method sample, bytes_sent/received count
   * the gathered query rows, the K/V rows exchanged and the reductions (each vector once each
   * way), and time_wait_s is the time in those collective steps. */
  sampleattn_stats* sample_stats;
  /* Method sample: the parts of bytes_received that are the sampled and validation query rows
   * (stage 1 scores them where their keys live) and the K/V rows of the masks (the window bands,
   * stripes and the keys of kv groups with a dense head); the rest is the reductions and the
   * gathered stripe lists. 0 for method dense. */
  uint64_t received_query_rows;
  uint64_t received_kv_rows;
} sampleattn_mpi_stats;

SAMPLEATTN_API void sampleattn_mpi_stats_init_sized(sampleattn_mpi_stats* stats, size_t size);
#define sampleattn_mpi_stats_init(stats) sampleattn_mpi_stats_init_sized((stats), sizeof(*(stats)))

/*
 * One context-parallel attention call. params describes the whole batch and this rank's tensors:
 *   - shapes and parameters as for sampleattn_forward over the whole sequences: batch with
 *     cu_seqlens_q == cu_seqlens_k (the global offsets of the whole sequences; or seqlen_q ==
 *     seqlen_k for one sequence): self-attention prefill, every sequence's queries are its keys;
 *   - q, k, v, o (and lse, optional) hold this rank's tokens only: sequence after sequence in
 *     batch order, each with its positions in the order of `shard` (ZIGZAG: chunk r, then chunk
 *     2P - 1 - r); the strides are those of these local tensors.
 * Supported: methods DENSE (causal 0 or 1) and SAMPLE (causal; every rank the same sample
 * parameters); f32, f16 and bf16 Q/K/V; grouped-query heads; head_dim_v; softcap; sinks; any
 * precision. Not supported (SAMPLEATTN_INVALID_ARGUMENT, named): alibi_slopes and window_left
 * (they need positions the blocks' calls do not carry), kv_cache (the shard's K/V are packed).
 * shard NULL = CONTIGUOUS, even split. stats may be NULL.
 */
SAMPLEATTN_API sampleattn_status sampleattn_mpi_forward(sampleattn_context* context, MPI_Comm comm,
                                                        const sampleattn_params* params,
                                                        const sampleattn_mpi_shard* shard,
                                                        sampleattn_mpi_stats* stats);

#ifdef __cplusplus
}
#endif

#endif /* SAMPLEATTN_SAMPLEATTN_MPI_H_ */
