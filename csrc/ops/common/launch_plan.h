// Launch plans of the CUDA kernels: grid, block and work per thread, as plain integer
// arithmetic on the problem's sizes.
//
// Host/device header without CUDA includes: the .cu launchers call these functions to launch,
// and the CPU build compiles them too, so `fastsmooth._C.cuda_launch_plan` reports the exact
// launch a GPU would get on a machine without one (tests check every kernel's parallelism on
// the benchmark rows' shapes that way).
//
// The rule the plans follow: a launch exposes at least lane_target(outputs) threads, where
// lane_target = min(ceil(outputs / 8), 2^20). 2^20 threads are about four waves of a 132-SM
// GPU (2048 resident threads per SM); below that, no thread writes more than 8 outputs. Kernels
// that loop over a second axis (ablations, DSSN evaluations) split that axis into chunks only
// as far as needed to reach the target, so each input element is still read once per chunk.
#pragma once
#include <stdint.h>

#include "macros.h"

namespace fastsmooth {

struct LaunchPlan {
  int64_t grid_x = 1, grid_y = 1, grid_z = 1;  // blocks
  int64_t block = 1;                            // threads per block
  int64_t chunk = 1;  // items of the kernel's inner axis (ablations, evaluations) per thread; 1 if none
  int64_t work = 0;   // outputs one thread writes, at most
  FS_HOST_DEVICE int64_t lanes() const { return grid_x * grid_y * grid_z * block; }
};

constexpr int64_t kLaneCap = int64_t(1) << 20;
constexpr int64_t kMaxGridX = 0x7FFFFFFF;
constexpr int64_t kMaxGridYZ = 65535;

FS_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
FS_HOST_DEVICE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
FS_HOST_DEVICE int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Threads a launch writing `outputs` elements must expose.
FS_HOST_DEVICE int64_t lane_target(int64_t outputs) { return min64(ceil_div(outputs, 8), kLaneCap); }

// The largest chunk of `items` (ablations, evaluations) one thread handles such that
// `lanes_per_chunk` threads per chunk still reach lane_target(outputs), capped at max_chunk.
// ceil(items / chunk) >= items / chunk >= the chunks needed, so the target holds whenever
// the items allow it (one item per thread is the most parallel launch).
FS_HOST_DEVICE int64_t chunk_for_target(int64_t items, int64_t lanes_per_chunk, int64_t outputs, int64_t max_chunk) {
  if (items <= 0 || lanes_per_chunk <= 0) return 1;
  const int64_t chunks_needed = ceil_div(lane_target(outputs), lanes_per_chunk);
  return max64(int64_t(1), min64(max_chunk, items / max64(chunks_needed, int64_t(1))));
}

// fastsmooth::ablate (cuda/ablation_kernel.cu). A thread owns one input element of B x C x H x W
// and a chunk of consecutive ablations: it reads and encodes the element once and writes its
// 2 * chunk outputs. Blocks are numbered chunk-major over (chunk, pixel tile) on a 1-D grid,
// walked with a block-stride loop past kMaxGridX blocks.
constexpr int64_t kAblateThreads = 256;
constexpr int64_t kAblateMaxChunk = 1024;

FS_HOST_DEVICE LaunchPlan plan_ablate(int64_t B, int64_t C, int64_t H, int64_t W, int64_t P) {
  LaunchPlan plan;
  const int64_t elements = B * C * H * W;
  plan.block = kAblateThreads;
  if (elements == 0 || P == 0) return plan;
  const int64_t tiles = ceil_div(elements, kAblateThreads);
  plan.chunk = chunk_for_target(P, tiles * kAblateThreads, 2 * P * elements, kAblateMaxChunk);
  plan.grid_x = min64(tiles * ceil_div(P, plan.chunk), kMaxGridX);
  plan.work = 2 * plan.chunk * ceil_div(tiles * ceil_div(P, plan.chunk), plan.grid_x);
  return plan;
}

// fastsmooth::ablate_pixels (cuda/pixel_ablation_kernel.cu): one block per output sample (the
// block selects the sample's kept pixels, then writes its 2C x d outputs). Blocks grow from 256
// to 1024 threads when the samples are too few to reach the target otherwise.
constexpr int64_t kPixelThreads = 256;
constexpr int64_t kPixelMaxThreads = 1024;

FS_HOST_DEVICE LaunchPlan plan_ablate_pixels(int64_t samples, int64_t C, int64_t d) {
  LaunchPlan plan;
  plan.block = kPixelThreads;
  if (samples == 0 || C == 0 || d == 0) return plan;
  const int64_t target = lane_target(samples * 2 * C * d);
  if (samples * kPixelThreads < target) plan.block = kPixelMaxThreads;
  plan.grid_x = samples;
  plan.work = 2 * C * ceil_div(d, plan.block);
  return plan;
}

// fastsmooth::gaussian_noise (cuda/gaussian_kernel.cu): one thread per (sample, quad of four
// elements), grid-stride past 2^20 blocks.
constexpr int64_t kNoiseThreads = 256;
constexpr int64_t kNoiseMaxBlocks = int64_t(1) << 20;

FS_HOST_DEVICE LaunchPlan plan_quads(int64_t quads) {
  LaunchPlan plan;
  plan.block = kNoiseThreads;
  if (quads == 0) return plan;
  plan.grid_x = min64(ceil_div(quads, kNoiseThreads), kNoiseMaxBlocks);
  plan.work = 4 * ceil_div(quads, plan.grid_x * kNoiseThreads);
  return plan;
}

FS_HOST_DEVICE LaunchPlan plan_gaussian_noise(int64_t count, int64_t D) { return plan_quads(count * ceil_div(D, 4)); }

// SSN / uniform noise (cuda/dssn_kernel.cu noise_kernel): one thread per four consecutive
// elements of one sample, like the Gaussian kernel.
FS_HOST_DEVICE LaunchPlan plan_noise(int64_t B, int64_t d, int64_t n) { return plan_quads(B * n * ceil_div(d, 4)); }

// fastsmooth::dssn_split (cuda/dssn_kernel.cu): a thread owns one input element (grid-stride
// over blockIdx.x past 2^16 blocks) and a group of `chunk` evaluations (blockIdx.y).
constexpr int64_t kDssnThreads = 256;
constexpr int64_t kDssnMaxBlocks = int64_t(1) << 16;
constexpr int64_t kDssnMaxGroup = 16;

FS_HOST_DEVICE LaunchPlan plan_dssn_split(int64_t B, int64_t d, int64_t K) {
  LaunchPlan plan;
  plan.block = kDssnThreads;
  const int64_t elements = B * d;
  if (elements == 0 || K == 0) return plan;
  plan.grid_x = min64(ceil_div(elements, kDssnThreads), kDssnMaxBlocks);
  plan.chunk = chunk_for_target(K, plan.grid_x * kDssnThreads, elements * K, kDssnMaxGroup);
  // blockIdx.y holds at most 65535 groups: larger K take larger groups.
  plan.chunk = max64(plan.chunk, ceil_div(K, kMaxGridYZ));
  plan.grid_y = ceil_div(K, plan.chunk);
  plan.work = plan.chunk * ceil_div(elements, plan.grid_x * kDssnThreads);
  return plan;
}

// fastsmooth::ablate_tokens (cuda/tokens_kernel.cu): a 2-D grid, x over tiles of `block`
// consecutive elements of one sample's kept-token pixels, y over samples (ablations x images),
// capped at the hardware limit with a grid-stride loop over the remaining samples. Each thread
// reads one input element and writes one output per sample it visits.
FS_HOST_DEVICE LaunchPlan plan_ablate_tokens(int64_t samples, int64_t per_sample) {
  LaunchPlan plan;
  plan.block = per_sample >= 256 ? 256 : (per_sample >= 64 ? 128 : 64);
  if (samples == 0 || per_sample == 0) return plan;
  plan.grid_x = ceil_div(per_sample, plan.block);
  plan.grid_y = min64(samples, kMaxGridYZ);
  plan.work = ceil_div(samples, plan.grid_y);
  return plan;
}

// fastsmooth::mask_pairs (cuda/mask_pairs_kernel.cu): a 2-D grid, x over tiles of `block`
// consecutive outputs of one row (C * H * W), y over rows (mask pairs x images) capped at the
// hardware limit with a grid-stride loop over the remaining rows, as plan_ablate_tokens.
FS_HOST_DEVICE LaunchPlan plan_mask_pairs(int64_t rows, int64_t per_row) { return plan_ablate_tokens(rows, per_row); }

}  // namespace fastsmooth
