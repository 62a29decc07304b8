// Writing an output file so that a reader never sees half of it: the bytes go to a temporary file
// beside the target, which is renamed over the target only once every byte is written. A write
// that fails part way (disk full, quota, the file size limit) leaves any previous file intact and
// no temporary file behind. Internal to the workload library (write_npy, write_png).
#pragma once

#include <cstdio>
#include <string>

#include "core/status.h"

namespace sampleattn::workload {

class AtomicFile {
 public:
  AtomicFile() = default;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();

  // Creates the temporary file beside `path` (same folder, so the rename stays on one file system).
  Status create(const std::string& path);

  // Where to write; valid between a successful create() and commit() or discard().
  std::FILE* file() const { return file_; }

  // Flushes (and with `sync`, fsyncs) the temporary file, gives it the mode of the file it replaces
  // (else rw-r--r--), and renames it over the target. On any failure the temporary file is removed,
  // the target is untouched, and the status says why ("cannot write '<path>': ...").
  Status commit(bool sync = false);

  // Abandons the write: closes and removes the temporary file. The status names `err` (an errno
  // value, 0 for none known) in the same words as a failed commit, for callers that saw the write fail.
  Status fail(int err);
  void discard();

 private:
  std::string path_;
  std::string tmp_;
  std::FILE* file_ = nullptr;
};

}  // namespace sampleattn::workload
