#include "runtime/backend.h"

#include "common/status.h"

namespace nf {

void Backend::forward_sample(const ScheduledBatch&, const DeviceSampleBatch&, DeviceSampleResult&) {
  fail("this backend does not sample on the device");
}

}  // namespace nf
