// Whole-buffer file reads and writes for the KV disk tier: through io_uring (resubmitting short
// transfers) or pread/pwrite. Each returns 0 or -errno; a short file is -ENODATA (truncated).
#pragma once

#include <cstddef>

struct io_uring;

namespace nf {

io_uring* ring(void* p);  // a ring kept as void* (so that headers need no liburing.h)
int ring_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off = 0);
int posix_io(int fd, std::byte* buf, size_t n, bool write, size_t off = 0);
// Through the ring when there is one, else pread/pwrite.
int file_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off = 0);
// One io_uring per reading thread (the scheduler's, each prefetch thread's), so that reads of
// different threads are in flight together; null where io_uring cannot be set up.
io_uring* thread_read_ring();

}  // namespace nf
