// A plain shape shared by the checked attention API (attention.h) and its raw launchers
// (launch.h).
#pragma once

namespace nf::cuda::launch {

// The streaming decode kernel's ring: tile_kb KiB tiles, `stages` of them per warp, up to
// `warps` warps per CTA. Built shapes: 16/2 (the default), 16/3, 8/4, 8/3, 8/2; another falls
// back to 16/2.
struct DecodeRing {
  int tile_kb = 16, stages = 2, warps = 8;
};

}  // namespace nf::cuda::launch
