// Q/K/V/O tensors on disk: NumPy .npy files of shape [seq, heads, head_dim], C order.
//
// Element types on disk:
//   f32  -> descr '<f4'
//   f16  -> descr '<f2' (IEEE binary16)
//   bf16 -> descr '<u2': NumPy has no bfloat16, so a bf16 tensor is stored as uint16 holding the
//           upper 16 bits of the f32 bit pattern (the bf16 bits themselves). Read it back in NumPy
//           with `(a.astype(np.uint32) << 16).view(np.float32)`. Any '<u2' file is read as bf16.
// Format versions 1.0, 2.0 and 3.0 are read (their headers differ only in the length field);
// files are written as 1.0 (2.0 when the header does not fit). Bytes after the data are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace sampleattn::workload {

// A dense [seq, heads, head_dim] tensor, dim contiguous, elements of `dtype` as raw bytes.
struct Tensor3 {
  int64_t seq = 0;
  int64_t heads = 0;
  int64_t dim = 0;
  DType dtype = DType::kF32;
  std::vector<uint8_t> bytes;

  int64_t num_elements() const { return seq * heads * dim; }
  int64_t token_stride() const { return heads * dim; }  // in elements
  int64_t head_stride() const { return dim; }           // in elements
  const void* data() const { return bytes.data(); }
  void* data() { return bytes.data(); }
  // Element (t, h, i) widened to f32.
  float at(int64_t t, int64_t h, int64_t i) const;
};

// A zero-filled tensor of the given shape and dtype. Fails on negative or overflowing shapes.
Status make_tensor(int64_t seq, int64_t heads, int64_t dim, DType dtype, Tensor3* out);

// Builds a tensor of `dtype` from f32 values laid out [seq, heads, dim] (rounding to nearest even).
Status tensor_from_f32(int64_t seq, int64_t heads, int64_t dim, DType dtype,
                       const std::vector<float>& values, Tensor3* out);

// All elements widened to f32, [seq, heads, dim].
std::vector<float> tensor_to_f32(const Tensor3& t);

// One head as f32 rows [seq, dim] (for the profile and mask-picture code).
std::vector<float> head_to_f32(const Tensor3& t, int64_t head);

// The same tensor converted to another dtype.
Status convert_tensor(const Tensor3& in, DType dtype, Tensor3* out);

Status read_npy(const std::string& path, Tensor3* out);
Status write_npy(const std::string& path, const Tensor3& tensor);

// The parsed header, exposed for tests and diagnostics.
struct NpyHeader {
  int major_version = 0;
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  int64_t data_offset = 0;  // bytes from the start of the file to the first element
};
// Parses the magic, version and header dict from the first bytes of a file.
Status parse_npy_header(const uint8_t* bytes, int64_t size, NpyHeader* header);

}  // namespace sampleattn::workload
