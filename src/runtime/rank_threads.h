// The threads of a tensor-parallel group: N ranks, each always run by the same thread, one job
// at a time. Used by the CPU backend's ranks (CpuCommGroup, rank 0 on the caller) and the CUDA
// backend's (CudaTpBackend, a thread per GPU). Header-only: the CUDA library links before the
// core library.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nf {

class RankThreads {
 public:
  // `ranks` ranks; rank 0 runs on the thread that calls run() when caller_is_rank0, every other
  // rank on a persistent thread of its own.
  RankThreads(int ranks, bool caller_is_rank0)
      : ranks_(ranks), first_(caller_is_rank0 ? 1 : 0), errors_(static_cast<size_t>(ranks)) {
    for (int r = first_; r < ranks; ++r) threads_.emplace_back([this, r] { loop(r); });
  }
  ~RankThreads() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    job_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  int size() const { return ranks_; }

  // Runs fn(r) for every rank at once and returns when all have returned. A rank that throws
  // calls on_error(r) on its thread (to release ranks that wait for it); run() then rethrows
  // the exception of the rank that failed first. Not reentrant: one run() at a time.
  void run(const std::function<void(int)>& fn, const std::function<void(int)>& on_error = {}) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      on_error_ = &on_error;
      ++job_id_;
      pending_ = ranks_ - first_;
      std::fill(errors_.begin(), errors_.end(), nullptr);
      first_error_.store(-1);
    }
    job_cv_.notify_all();
    if (first_ == 1) run_rank(0);
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [&] { return pending_ == 0; });
      job_ = nullptr;
      on_error_ = nullptr;
    }
    const int failed = first_error_.load();
    if (failed >= 0) std::rethrow_exception(errors_[static_cast<size_t>(failed)]);
  }

 private:
  void run_rank(int r) {
    try {
      (*job_)(r);
    } catch (...) {
      errors_[static_cast<size_t>(r)] = std::current_exception();
      int none = -1;
      first_error_.compare_exchange_strong(none, r);
      if (*on_error_) (*on_error_)(r);
    }
  }

  void loop(int r) {
    uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        job_cv_.wait(lock, [&] { return stop_ || job_id_ != seen; });
        if (stop_) return;
        seen = job_id_;
      }
      run_rank(r);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  const int ranks_, first_;
  std::mutex mu_;
  std::condition_variable job_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  const std::function<void(int)>* on_error_ = nullptr;
  uint64_t job_id_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::vector<std::exception_ptr> errors_;
  std::atomic<int> first_error_{-1};
  std::vector<std::thread> threads_;  // ranks first_ .. ranks_ - 1
};

}  // namespace nf
