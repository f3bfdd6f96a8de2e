#include "runtime/backend.h"

#include "common/status.h"

namespace nf {

void Backend::forward_sample(const ScheduledBatch&, const DeviceSampleBatch&, DeviceSampleResult&) {
  fail("this backend does not sample on the device");
}

void Backend::read_kv_block(int32_t, std::span<std::byte>) {
  fail("this backend cannot copy KV blocks (KV offload)");
}

void Backend::write_kv_block(int32_t, std::span<const std::byte>) {
  fail("this backend cannot copy KV blocks (KV offload)");
}

void Backend::set_pipeline(const PipelineConfig& pipeline) {
  for (const PipelineSchedule& s : pipeline.schedules)
    if (!s.is_serial()) fail("this backend does not run nano-batch schedules (\"{}\")", s.name);
}

}  // namespace nf
