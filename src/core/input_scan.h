// The non-finite and range policy (docs/SECURITY.md): before any kernel runs, a backend scans Q,
// K and V once and fails the call with SAMPLEATTN_INVALID_ARGUMENT when a value is NaN or
// infinite, or when the inputs are so large that a score or an output sum could overflow f32.
// The check reads the inputs through their dtype, the same way on every kernel table and backend,
// so the outcome never depends on the ISA; and since every score is then finite, no row can
// masquerade as "saw no key" and stages 1 and 2 only ever see finite column scores.
#pragma once

#include <cstdint>

#include "core/problem.h"
#include "core/row_scan.h"
#include "core/status.h"

namespace sampleattn {

// What a scan of some rows of one tensor found. Scans of disjoint row ranges merge.
struct InputScan {
  int64_t bad_sequence = -1;  // K/V: the sequence of the bad key (bad_token is then its position)
  int64_t bad_token = -1;  // the first (token, head, dim) holding NaN/Inf, or -1 (dim -1: a scale)
  int bad_head = 0;
  int bad_dim = 0;
  float max_row_norm = 0;  // max over rows of the L2 norm (inf when it overflows f32)
  float max_abs = 0;       // max |x|

  void merge(const InputScan& other);
};

// Scans tokens [token_begin, token_end) of all `heads` heads, `dim` values per row; f32, bf16 and
// f16 rows with scan_row (a kernel table's, or the portable definition: the same bits).
InputScan scan_rows(const TensorView& t, int heads, int dim, int64_t token_begin, int64_t token_end,
                    RowScanFn* scan_row = scan_row_portable);

// Keys [key_begin, key_end) of sequence `seq`, all kv heads, of K (values = false) or V, read
// through the KV cache's addressing; a quantized row counts as its values times its scale. Without
// read_values, no value is read (the scales still are): f16, int8 and fp8 rows count with their
// dtype's bound, f32 and bf16 rows with nothing, for a backend whose attention checks every value
// it reads and measures the largest magnitudes (the CPU's decode kernel; docs/SECURITY.md).
InputScan scan_kv_rows(const Problem& problem, bool values, int seq, int64_t key_begin, int64_t key_end,
                       bool read_values = true, RowScanFn* scan_row = scan_row_portable);

// The call's verdict from the scans of the whole of Q, K and V.
Status input_scan_status(const Problem& problem, const InputScan& q, const InputScan& k, const InputScan& v);

}  // namespace sampleattn
