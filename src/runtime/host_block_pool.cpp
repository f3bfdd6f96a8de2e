#include "runtime/host_block_pool.h"

#include <algorithm>
#include <mutex>
#include <new>
#include <vector>

#include "common/status.h"

namespace nf {

HostAllocator HostAllocator::plain() {
  constexpr std::align_val_t kAlign{4096};
  return {[](size_t n) { return ::operator new(n, kAlign); },
          [](void* p) { ::operator delete(p, kAlign); }};
}

struct HostBlockPool::State {
  HostAllocator allocator;
  size_t block_bytes = 0, chunk_blocks = 0;
  std::mutex mu;
  std::vector<void*> chunks;
  std::vector<std::byte*> free;

  ~State() {
    for (void* c : chunks) allocator.free(c);
  }
  void grow() {  // under mu
    void* c = allocator.alloc(block_bytes * chunk_blocks);
    if (c == nullptr) throw std::bad_alloc();
    chunks.push_back(c);
    for (size_t i = chunk_blocks; i-- > 0;)
      free.push_back(static_cast<std::byte*>(c) + i * block_bytes);
  }
};

HostBlockPool::HostBlockPool(size_t block_bytes, HostAllocator allocator, size_t chunk_bytes)
    : block_bytes_(block_bytes), st_(std::make_shared<State>()) {
  NF_CHECK(block_bytes > 0 && allocator.alloc && allocator.free, "host block pool: {} bytes",
           block_bytes);
  st_->allocator = std::move(allocator);
  st_->block_bytes = block_bytes;
  st_->chunk_blocks = std::max<size_t>(1, chunk_bytes / block_bytes);
}

HostBlockPool::~HostBlockPool() = default;  // buffers still out keep the state alive

HostBlockPool::Buffer HostBlockPool::get() {
  std::byte* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    if (st_->free.empty()) st_->grow();
    p = st_->free.back();
    st_->free.pop_back();
  }
  return Buffer(p, [st = st_](std::byte* b) {
    std::lock_guard<std::mutex> lock(st->mu);
    st->free.push_back(b);
  });
}

void HostBlockPool::reserve(int64_t blocks) {
  std::lock_guard<std::mutex> lock(st_->mu);
  while (static_cast<int64_t>(st_->chunks.size() * st_->chunk_blocks) < blocks) st_->grow();
}

int64_t HostBlockPool::allocated_blocks() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return static_cast<int64_t>(st_->chunks.size() * st_->chunk_blocks);
}

int64_t HostBlockPool::free_blocks() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return static_cast<int64_t>(st_->free.size());
}

}  // namespace nf
