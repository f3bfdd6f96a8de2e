#include "engine/kv_file_io.h"

#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace nf {

io_uring* ring(void* p) {
  return static_cast<io_uring*>(p);
}

int ring_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off) {
  size_t done = 0;
  while (done < n) {
    io_uring_sqe* sqe = io_uring_get_sqe(r);
    if (sqe == nullptr) return -EBUSY;
    const unsigned len = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    if (write) {
      io_uring_prep_write(sqe, fd, buf + done, len, off + done);
    } else {
      io_uring_prep_read(sqe, fd, buf + done, len, off + done);
    }
    int rc = io_uring_submit(r);
    if (rc < 0) return rc;
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(r, &cqe);
    if (rc < 0) return rc;
    const int res = cqe->res;
    io_uring_cqe_seen(r, cqe);
    if (res < 0) return res;
    if (res == 0) return write ? -EIO : -ENODATA;  // end of file: truncated
    done += static_cast<size_t>(res);
  }
  return 0;
}

io_uring* thread_read_ring() {
  struct Ring {
    io_uring r{};
    bool ok = false;
    Ring() { ok = io_uring_queue_init(8, &r, 0) == 0; }
    ~Ring() {
      if (ok) io_uring_queue_exit(&r);
    }
  };
  thread_local Ring ring;
  return ring.ok ? &ring.r : nullptr;
}

int posix_io(int fd, std::byte* buf, size_t n, bool write, size_t off) {
  size_t done = 0;
  while (done < n) {
    const auto at = static_cast<off_t>(off + done);
    const ssize_t r = write ? ::pwrite(fd, buf + done, n - done, at)
                            : ::pread(fd, buf + done, n - done, at);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return write ? -EIO : -ENODATA;
    done += static_cast<size_t>(r);
  }
  return 0;
}

int file_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off) {
  return r != nullptr ? ring_io(r, fd, buf, n, write, off) : posix_io(fd, buf, n, write, off);
}

}  // namespace nf
