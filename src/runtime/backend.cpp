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

uint64_t Backend::start_kv_save(std::span<const int32_t> blocks, std::span<std::byte* const> dst) {
  NF_CHECK(blocks.size() == dst.size(), "start_kv_save: {} blocks, {} buffers", blocks.size(),
           dst.size());
  for (size_t i = 0; i < blocks.size(); ++i) read_kv_block(blocks[i], {dst[i], kv_block_bytes()});
  return 0;
}

uint64_t Backend::start_kv_load(std::span<const int32_t> blocks,
                            std::span<const std::byte* const> src) {
  NF_CHECK(blocks.size() == src.size(), "start_kv_load: {} blocks, {} buffers", blocks.size(),
           src.size());
  for (size_t i = 0; i < blocks.size(); ++i) write_kv_block(blocks[i], {src[i], kv_block_bytes()});
  return 0;
}

void Backend::set_pipeline(const PipelineConfig& pipeline) {
  for (const PipelineSchedule& s : pipeline.schedules)
    if (!s.is_serial()) fail("this backend does not run nano-batch schedules (\"{}\")", s.name);
}

}  // namespace nf
