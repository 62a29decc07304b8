// One row of the input policy's scan (core/input_scan.h): whether an f32, bf16 or f16 row is
// finite, where its first non-finite value is, its sum of squares and its largest magnitude. The
// definition is scan_row_portable (core/input_scan.cpp); the kernel tables carry vectorized
// versions (KernelTable::scan_row) that return the same bits, so the call's verdict never depends
// on the ISA (tests/kernels_test.cpp checks it).
#pragma once

#include "core/dtype.h"

namespace sampleattn {

struct RowScan {
  float sumsq = 0;    // sum of x^2: element i adds to lane i % 8 (x * x rounded, then added), in
                      // order; the tail past a multiple of 8 to lane 0; then lanes 0..7 summed in
                      // order. f16 rows: dim * 65504^2 (the dtype bounds them; only bits are read)
  float max_abs = 0;  // max |x| (NaN ignored); f16 rows: 65504
  bool finite = true;
  int bad_dim = 0;    // the first non-finite value's index when !finite
};

// Scans `dim` values of an f32, bf16 or f16 row (other dtypes: see scan_kv_rows).
using RowScanFn = RowScan(const void* row, DType dtype, int dim);

// The definition, in portable code.
RowScan scan_row_portable(const void* row, DType dtype, int dim);

}  // namespace sampleattn
