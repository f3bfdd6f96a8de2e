#include "runtime/backend.h"

#include "common/status.h"

namespace nf {

void Backend::forward_sample(const ScheduledBatch&, const DeviceSampleBatch&, DeviceSampleResult&) {
  fail("this backend does not sample on the device");
}

void Backend::set_pipeline(const PipelineConfig& pipeline) {
  for (const PipelineSchedule& s : pipeline.schedules)
    if (!s.is_serial()) fail("this backend does not run nano-batch schedules (\"{}\")", s.name);
}

}  // namespace nf
