#include "cuda/host_workers.h"

#include <algorithm>
#include <new>
#include <system_error>

namespace sampleattn::cuda {

HostWorkers::~HostWorkers() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : threads_) t.join();
}

int HostWorkers::started() const {
  std::lock_guard<std::mutex> lock(m_);
  return static_cast<int>(threads_.size());
}

void HostWorkers::start(int wanted) {
  // Under run_mutex_ (no step runs), so the workers are all idle in loop(). Room first, so that
  // a started thread is never dropped joinable by a push_back that cannot allocate.
  try {
    std::lock_guard<std::mutex> lock(m_);
    threads_.reserve(static_cast<size_t>(wanted));
  } catch (const std::bad_alloc&) {
    return;
  }
  while (static_cast<int>(threads_.size()) < wanted) {
    try {
      uint64_t seen;
      {
        std::lock_guard<std::mutex> lock(m_);
        seen = generation_;  // the steps so far; the next one is its first
      }
      std::thread t([this, seen] { loop(seen); });
      std::lock_guard<std::mutex> lock(m_);
      threads_.push_back(std::move(t));
    } catch (const std::system_error&) {
      return;  // fewer workers: the others take their share
    } catch (const std::bad_alloc&) {
      return;
    }
  }
}

void HostWorkers::work(const std::function<void(int)>& f, int n) {
  for (;;) {
    int i;
    {
      std::lock_guard<std::mutex> lock(m_);
      if (next_ >= n) return;
      i = next_++;
    }
    f(i);
  }
}

void HostWorkers::loop(uint64_t seen) {
  for (;;) {
    const std::function<void(int)>* job;
    int n;
    {
      std::unique_lock<std::mutex> lock(m_);
      // A step that wants fewer workers than are up leaves the rest asleep: a worker joins while
      // the step has places left.
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && joining_ > 0); });
      if (stop_) return;
      seen = generation_;
      --joining_;
      ++active_;
      job = job_;
      n = n_;
    }
    work(*job, n);
    {
      std::lock_guard<std::mutex> lock(m_);
      if (--active_ == 0) done_.notify_one();
    }
  }
}

void HostWorkers::run(int n, int threads, const std::function<void(int)>& f) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> step(run_mutex_);
  const int helpers = std::min(std::min(threads, most_), n) - 1;
  if (helpers > 0) start(helpers);
  int joining;
  {
    std::lock_guard<std::mutex> lock(m_);
    joining = std::min(helpers, static_cast<int>(threads_.size()));
    job_ = &f;
    n_ = n;
    next_ = 0;
    joining_ = joining;
    ++generation_;
  }
  if (joining > 0) wake_.notify_all();
  work(f, n);
  std::unique_lock<std::mutex> lock(m_);
  // Every index is taken; wait for the workers that joined, and close the step to latecomers.
  joining_ = 0;
  done_.wait(lock, [&] { return active_ == 0; });
  job_ = nullptr;
}

}  // namespace sampleattn::cuda
