#include "workload/npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <algorithm>
#include <memory>
#include <new>
#include <utility>

#include "core/dtype_convert.h"
#include "cpu/cgroup_limits.h"
#include "workload/atomic_file.h"

namespace sampleattn::workload {
namespace {

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr int64_t kMaxHeaderBytes = int64_t{1} << 20;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

Status bad_file(const std::string& what) { return invalid_argument(".npy: " + what); }

bool checked_elements(int64_t seq, int64_t heads, int64_t dim, int64_t* count) {
  if (seq < 0 || heads < 0 || dim < 0) return false;
  const int64_t limit = std::numeric_limits<int64_t>::max() / 8;
  int64_t n = seq;
  if (heads != 0 && n > limit / heads) return false;
  n *= heads;
  if (dim != 0 && n > limit / dim) return false;
  n *= dim;
  *count = n;
  return true;
}

const char* descr_for(DType t) {
  switch (t) {
    case DType::kF32: return "<f4";
    case DType::kF16: return "<f2";
    case DType::kBF16: return "<u2";
    case DType::kI8: return "|i1";
    case DType::kFP8: return "|u1";
  }
  return "?";
}

// Finds `'key':` in the dict text and returns the position just after the colon, or npos.
size_t find_key(const std::string& dict, const char* key) {
  const std::string k1 = std::string("'") + key + "'";
  const std::string k2 = std::string("\"") + key + "\"";
  size_t pos = dict.find(k1);
  size_t len = k1.size();
  if (pos == std::string::npos) {
    pos = dict.find(k2);
    len = k2.size();
  }
  if (pos == std::string::npos) return std::string::npos;
  pos += len;
  while (pos < dict.size() && dict[pos] == ' ') ++pos;
  if (pos >= dict.size() || dict[pos] != ':') return std::string::npos;
  ++pos;
  while (pos < dict.size() && dict[pos] == ' ') ++pos;
  return pos;
}

}  // namespace

float Tensor3::at(int64_t t, int64_t h, int64_t i) const {
  return load_scalar(bytes.data(), dtype, (t * heads + h) * dim + i);
}

Status make_tensor(int64_t seq, int64_t heads, int64_t dim, DType dtype, Tensor3* out) {
  if (out == nullptr) return null_pointer("make_tensor: out is null");
  int64_t n = 0;
  if (!checked_elements(seq, heads, dim, &n)) {
    return invalid_shape("tensor shape [" + std::to_string(seq) + ", " + std::to_string(heads) +
                         ", " + std::to_string(dim) + "] is negative or too large");
  }
  out->seq = seq;
  out->heads = heads;
  out->dim = dim;
  out->dtype = dtype;
  const uint64_t bytes = static_cast<uint64_t>(n) * dtype_size(dtype);
  const auto out_of_memory = [&] {
    out->bytes = {};
    return Status(SAMPLEATTN_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) +
                                                " bytes for a tensor of shape [" + std::to_string(seq) + ", " +
                                                std::to_string(heads) + ", " + std::to_string(dim) + "]");
  };
  // Past the host's memory ceiling the request cannot succeed, and on a host that overcommits the
  // zero-filling would draw the OOM killer instead of bad_alloc (cpu/cgroup_limits.h).
  if (!cpu::fits_memory_ceiling(bytes)) return out_of_memory();
  try {
    out->bytes.assign(static_cast<size_t>(bytes), 0);
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
  return Status::ok();
}

Status tensor_from_f32(int64_t seq, int64_t heads, int64_t dim, DType dtype,
                       const std::vector<float>& values, Tensor3* out) {
  SAMPLEATTN_RETURN_IF_ERROR(make_tensor(seq, heads, dim, dtype, out));
  const int64_t n = out->num_elements();
  if (static_cast<int64_t>(values.size()) != n) {
    return invalid_shape("tensor_from_f32: " + std::to_string(values.size()) +
                         " values for a tensor of " + std::to_string(n) + " elements");
  }
  if (dtype == DType::kF32) {
    if (n > 0) std::memcpy(out->bytes.data(), values.data(), static_cast<size_t>(n) * 4);
    return Status::ok();
  }
  for (int64_t e = 0; e < n; ++e) store_scalar(out->bytes.data(), dtype, e, values[e]);
  return Status::ok();
}

std::vector<float> tensor_to_f32(const Tensor3& t) {
  const int64_t n = t.num_elements();
  std::vector<float> v(static_cast<size_t>(n));
  if (t.dtype == DType::kF32) {
    if (n > 0) std::memcpy(v.data(), t.bytes.data(), static_cast<size_t>(n) * 4);
  } else {
    for (int64_t e = 0; e < n; ++e) v[e] = load_scalar(t.bytes.data(), t.dtype, e);
  }
  return v;
}

std::vector<float> head_to_f32(const Tensor3& t, int64_t head) {
  std::vector<float> v;
  if (head < 0 || head >= t.heads) return v;
  v.resize(static_cast<size_t>(t.seq * t.dim));
  for (int64_t s = 0; s < t.seq; ++s) {
    const int64_t base = (s * t.heads + head) * t.dim;
    for (int64_t i = 0; i < t.dim; ++i) v[s * t.dim + i] = load_scalar(t.bytes.data(), t.dtype, base + i);
  }
  return v;
}

Status convert_tensor(const Tensor3& in, DType dtype, Tensor3* out) {
  if (out == nullptr) return null_pointer("convert_tensor: out is null");
  if (in.dtype == dtype) {
    *out = in;
    return Status::ok();
  }
  return tensor_from_f32(in.seq, in.heads, in.dim, dtype, tensor_to_f32(in), out);
}

Status parse_npy_header(const uint8_t* bytes, int64_t size, NpyHeader* header) {
  if (bytes == nullptr || header == nullptr) return null_pointer("parse_npy_header: null argument");
  if (size < 10 || std::memcmp(bytes, kMagic, 6) != 0) {
    return bad_file("wrong magic (not a NumPy .npy file)");
  }
  const int major = bytes[6];
  const int minor = bytes[7];
  int64_t header_len = 0;
  int64_t prefix = 0;
  if (major == 1) {
    header_len = bytes[8] | (bytes[9] << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) return bad_file("truncated header");
    header_len = static_cast<int64_t>(bytes[8]) | (static_cast<int64_t>(bytes[9]) << 8) |
                 (static_cast<int64_t>(bytes[10]) << 16) | (static_cast<int64_t>(bytes[11]) << 24);
    prefix = 12;
  } else {
    return bad_file("unsupported format version " + std::to_string(major) + "." +
                    std::to_string(minor) + " (1.0, 2.0 and 3.0 are read)");
  }
  if (prefix + header_len > size) return bad_file("truncated header");
  const std::string dict(reinterpret_cast<const char*>(bytes + prefix), static_cast<size_t>(header_len));
  header->major_version = major;
  header->data_offset = prefix + header_len;

  // descr
  size_t pos = find_key(dict, "descr");
  if (pos == std::string::npos || (dict[pos] != '\'' && dict[pos] != '"')) {
    return bad_file("header has no 'descr'");
  }
  const char quote = dict[pos];
  const size_t end = dict.find(quote, pos + 1);
  if (end == std::string::npos) return bad_file("malformed 'descr'");
  header->descr = dict.substr(pos + 1, end - pos - 1);

  // fortran_order
  pos = find_key(dict, "fortran_order");
  if (pos == std::string::npos) return bad_file("header has no 'fortran_order'");
  if (dict.compare(pos, 4, "True") == 0) {
    header->fortran_order = true;
  } else if (dict.compare(pos, 5, "False") == 0) {
    header->fortran_order = false;
  } else {
    return bad_file("malformed 'fortran_order'");
  }

  // shape: a tuple of non-negative integers, e.g. (45, 32, 128) or (7,)
  pos = find_key(dict, "shape");
  if (pos == std::string::npos || dict[pos] != '(') return bad_file("header has no 'shape' tuple");
  const size_t close = dict.find(')', pos);
  if (close == std::string::npos) return bad_file("malformed 'shape'");
  header->shape.clear();
  size_t i = pos + 1;
  while (i < close) {
    while (i < close && (dict[i] == ' ' || dict[i] == ',')) ++i;
    if (i >= close) break;
    if (dict[i] < '0' || dict[i] > '9') return bad_file("malformed 'shape'");
    int64_t v = 0;
    while (i < close && dict[i] >= '0' && dict[i] <= '9') {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) return bad_file("shape too large");
      v = v * 10 + (dict[i] - '0');
      ++i;
    }
    if (i < close && dict[i] == 'L') ++i;  // Python 2 longs
    header->shape.push_back(v);
  }
  return Status::ok();
}

Status read_npy(const std::string& path, Tensor3* out) {
  if (out == nullptr) return null_pointer("read_npy: out is null");
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return invalid_argument("cannot open '" + path + "': " + std::strerror(errno));
  // The file's size bounds everything read from it: no allocation is sized from the header alone.
  if (std::fseek(f.get(), 0, SEEK_END) != 0) return bad_file("'" + path + "': cannot seek");
  const long end = std::ftell(f.get());
  if (end < 0 || std::fseek(f.get(), 0, SEEK_SET) != 0) return bad_file("'" + path + "': cannot seek");
  const int64_t file_size = end;

  // The fixed prefix (magic, version, header length) is 10 bytes in version 1, 12 in 2 and 3;
  // the header dict follows. Real headers are < 64 KiB; a longer one is refused.
  std::vector<uint8_t> head(static_cast<size_t>(std::min<int64_t>(file_size, 12)));
  if (!head.empty() && std::fread(head.data(), 1, head.size(), f.get()) != head.size()) {
    return bad_file("'" + path + "': cannot read the header");
  }
  if (head.size() >= 10 && std::memcmp(head.data(), kMagic, 6) == 0 && head[6] >= 1 && head[6] <= 3) {
    const int64_t prefix = head[6] == 1 ? 10 : 12;
    int64_t len = head[8] | (head[9] << 8);
    if (head[6] != 1 && head.size() >= 12) {
      len |= (static_cast<int64_t>(head[10]) << 16) | (static_cast<int64_t>(head[11]) << 24);
    }
    if (len > kMaxHeaderBytes) {
      return bad_file("'" + path + "': header of " + std::to_string(len) + " bytes is implausible");
    }
    const int64_t want = std::min(prefix + len, file_size);  // short files fail in the parser
    if (want > static_cast<int64_t>(head.size())) {
      const size_t have = head.size();
      head.resize(static_cast<size_t>(want));
      if (std::fread(head.data() + have, 1, head.size() - have, f.get()) != head.size() - have) {
        return bad_file("'" + path + "': cannot read the header");
      }
    }
  }
  NpyHeader h;
  Status st = parse_npy_header(head.data(), static_cast<int64_t>(head.size()), &h);
  if (!st.is_ok()) return Status(st.code(), "'" + path + "': " + st.message());

  DType dtype;
  if (h.descr == "<f4") {
    dtype = DType::kF32;
  } else if (h.descr == "<f2") {
    dtype = DType::kF16;
  } else if (h.descr == "<u2") {
    dtype = DType::kBF16;
  } else {
    return Status(SAMPLEATTN_UNSUPPORTED_DTYPE,
                  "'" + path + "': .npy dtype '" + h.descr +
                      "' is not supported (use little-endian '<f4', '<f2', or '<u2' for bf16 bits)");
  }
  if (h.fortran_order) {
    return bad_file("'" + path + "' is in Fortran order; save it C-contiguous (np.ascontiguousarray)");
  }
  if (h.shape.size() != 3) {
    return invalid_shape("'" + path + "': .npy shape has " + std::to_string(h.shape.size()) +
                         " dimensions, expected 3: [seq, heads, head_dim]");
  }
  int64_t elements = 0;
  if (!checked_elements(h.shape[0], h.shape[1], h.shape[2], &elements)) {
    return invalid_shape("'" + path + "': shape [" + std::to_string(h.shape[0]) + ", " +
                         std::to_string(h.shape[1]) + ", " + std::to_string(h.shape[2]) +
                         "] is too large");
  }
  const int64_t esize = dtype_size(dtype);
  const int64_t need = elements * esize;
  const int64_t held = std::max<int64_t>(0, file_size - h.data_offset);
  if (need > held) {
    return bad_file("'" + path + "' is truncated: the shape needs " + std::to_string(need) +
                    " bytes of data, the file holds " + std::to_string(held) + " (" +
                    std::to_string(held / esize) + " elements)");
  }
  Tensor3 t;
  st = make_tensor(h.shape[0], h.shape[1], h.shape[2], dtype, &t);
  if (!st.is_ok()) return Status(st.code(), "'" + path + "': " + st.message());
  if (std::fseek(f.get(), static_cast<long>(h.data_offset), SEEK_SET) != 0) {
    return bad_file("'" + path + "': cannot seek to the data");
  }
  if (need > 0 && std::fread(t.bytes.data(), 1, static_cast<size_t>(need), f.get()) != static_cast<size_t>(need)) {
    return bad_file("'" + path + "': read error: " + std::strerror(errno));
  }
  *out = std::move(t);
  return Status::ok();
}

Status write_npy(const std::string& path, const Tensor3& t) {
  int64_t n = 0;
  if (!checked_elements(t.seq, t.heads, t.dim, &n) ||
      static_cast<int64_t>(t.bytes.size()) != n * dtype_size(t.dtype)) {
    return invalid_shape("write_npy: tensor bytes do not match its shape and dtype");
  }
  std::string dict = std::string("{'descr': '") + descr_for(t.dtype) +
                     "', 'fortran_order': False, 'shape': (" + std::to_string(t.seq) + ", " +
                     std::to_string(t.heads) + ", " + std::to_string(t.dim) + "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary; the header ends with '\n'.
  int64_t prefix = 10;
  int64_t total = prefix + static_cast<int64_t>(dict.size()) + 1;
  int major = 1;
  if (((total + 63) / 64) * 64 - prefix > 65535) {
    major = 2;
    prefix = 12;
    total = prefix + static_cast<int64_t>(dict.size()) + 1;
  }
  const int64_t padded = ((total + 63) / 64) * 64;
  dict.append(static_cast<size_t>(padded - total), ' ');
  dict.push_back('\n');
  const int64_t len = static_cast<int64_t>(dict.size());

  std::vector<uint8_t> header(kMagic, kMagic + 6);
  header.push_back(static_cast<uint8_t>(major));
  header.push_back(0);
  header.push_back(static_cast<uint8_t>(len & 0xff));
  header.push_back(static_cast<uint8_t>((len >> 8) & 0xff));
  if (major == 2) {
    header.push_back(static_cast<uint8_t>((len >> 16) & 0xff));
    header.push_back(static_cast<uint8_t>((len >> 24) & 0xff));
  }
  header.insert(header.end(), dict.begin(), dict.end());

  // A write that fails part way (disk full, quota) leaves any previous file at `path` intact.
  AtomicFile out;
  SAMPLEATTN_RETURN_IF_ERROR(out.create(path));
  if (std::fwrite(header.data(), 1, header.size(), out.file()) != header.size() ||
      (!t.bytes.empty() && std::fwrite(t.bytes.data(), 1, t.bytes.size(), out.file()) != t.bytes.size())) {
    return out.fail(errno);
  }
  return out.commit();
}

}  // namespace sampleattn::workload
