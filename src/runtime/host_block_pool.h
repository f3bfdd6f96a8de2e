// Fixed-size host buffers for KV blocks (engine/kv_offload.h), carved from chunks that the
// backend allocates: pinned memory on CUDA, so that block copies to and from the device run on
// the copy engines straight from these buffers, with no staging copy on the host.
//
// A buffer is a shared_ptr: the host tier holds it, an in-flight load or save shares it, and the
// last owner returns it to the pool's free list. Chunks are freed once the pool and every buffer
// are gone. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace nf {

struct HostAllocator {
  std::function<void*(size_t)> alloc;  // null result or an exception: out of memory
  std::function<void(void*)> free;
  static HostAllocator plain();  // aligned operator new
};

class HostBlockPool {
 public:
  using Buffer = std::shared_ptr<std::byte>;
  // chunk_bytes: the allocation unit (rounded to whole blocks, at least one).
  HostBlockPool(size_t block_bytes, HostAllocator allocator = HostAllocator::plain(),
                size_t chunk_bytes = size_t{64} << 20);
  ~HostBlockPool();
  HostBlockPool(const HostBlockPool&) = delete;
  HostBlockPool& operator=(const HostBlockPool&) = delete;

  size_t block_bytes() const { return block_bytes_; }
  // A free buffer, allocating a chunk when none is left. Its content is undefined.
  Buffer get();
  // Allocates chunks until `blocks` buffers exist (e.g. a host tier's whole capacity at start-up,
  // so that no allocation, and no pinning, happens while serving).
  void reserve(int64_t blocks);
  int64_t allocated_blocks() const;
  int64_t free_blocks() const;

 private:
  struct State;
  size_t block_bytes_;
  std::shared_ptr<State> st_;
};

}  // namespace nf
