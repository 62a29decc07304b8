#include "workload/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sampleattn::workload {

AtomicFile::~AtomicFile() { discard(); }

Status AtomicFile::create(const std::string& path) {
  discard();
  path_ = path;
  std::string tmp = path + ".XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return invalid_argument("cannot create '" + path + "': " + std::strerror(errno));
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    const int err = errno;
    ::close(fd);
    std::remove(tmp.c_str());
    return invalid_argument("cannot create '" + path + "': " + std::strerror(err));
  }
  tmp_ = std::move(tmp);
  return Status::ok();
}

void AtomicFile::discard() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  if (!tmp_.empty()) std::remove(tmp_.c_str());
  tmp_.clear();
}

Status AtomicFile::fail(int err) {
  discard();
  return invalid_argument("cannot write '" + path_ + "': " + std::strerror(err != 0 ? err : EIO));
}

Status AtomicFile::commit(bool sync) {
  if (file_ == nullptr) return invalid_argument("cannot write '" + path_ + "': the file was not created");
  errno = 0;
  // A failed fwrite earlier sets the error indicator even when the caller did not check it.
  if (std::fflush(file_) != 0 || std::ferror(file_)) return fail(errno);
  if (sync && ::fsync(::fileno(file_)) != 0) return fail(errno);
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) return fail(errno);
  // mkstemp creates the file 0600: keep the mode of the file it replaces, else rw-r--r--.
  struct stat previous {};
  const mode_t mode = ::stat(path_.c_str(), &previous) == 0 ? (previous.st_mode & 07777) : 0644;
  if (::chmod(tmp_.c_str(), mode) != 0) return fail(errno);
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) return fail(errno);
  tmp_.clear();
  return Status::ok();
}

}  // namespace sampleattn::workload
