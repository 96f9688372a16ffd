// CPU kernel of fastsmooth::ablate_pixels (OpenMP through at::parallel_for).
//
// Each image is encoded once up front ([B, 2C, d] values stored as same-width integers), then
// work is split over output samples: a sample computes its d keys, finds the keep-th smallest
// with std::nth_element (linear time) and copies the encoded image under the resulting mask,
// which vectorizes for every dtype because the masked copy is an integer AND.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../common/ablation.h"
#include "../common/pixel_ablation.h"
#include "../pixel_ablation_args.h"
#include "output.h"

namespace fastsmooth {
namespace {

template <size_t N>
struct PixelBits;
template <>
struct PixelBits<2> { using type = uint16_t; };
template <>
struct PixelBits<4> { using type = uint32_t; };
template <>
struct PixelBits<8> { using type = uint64_t; };

// Keys of all d pixels of one sample.
void sample_keys(uint64_t seed, int64_t sample, int64_t d, int index_bits, uint64_t* keys) {
  for (int64_t q = 0; 2 * q < d; ++q) {
    const KeyPair pair = pixel_key_pair(seed, sample, q, index_bits);
    keys[2 * q] = pair.even;
    if (2 * q + 1 < d) keys[2 * q + 1] = pair.odd;
  }
}

template <typename scalar_t>
void ablate_pixels_impl(const at::Tensor& x, int64_t keep, int64_t n, uint64_t seed, bool shared,
                        const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                        at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  using bits_t = typename PixelBits<sizeof(scalar_t)>::type;
  const int64_t B = x.size(0), C = x.size(1), d = x.size(2) * x.size(3);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const acc_t* mp = mean.has_value() ? mean->data_ptr<acc_t>() : nullptr;
  const acc_t* sp = std.has_value() ? std->data_ptr<acc_t>() : nullptr;

  // Encoded images [B, 2C, d]: channel c holds v, channel C + c holds 1 - v.
  std::vector<bits_t> encoded(static_cast<size_t>(B * 2 * C * d));
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      bits_t* value = encoded.data() + (b * 2 * C + c) * d;
      bits_t* complement = value + C * d;
      for (int64_t i = 0; i < d; ++i) {
        const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xp[bc * d + i]), mp, sp, c);
        const scalar_t v = static_cast<scalar_t>(e.value), k = static_cast<scalar_t>(e.complement);
        std::memcpy(&value[i], &v, sizeof(bits_t));
        std::memcpy(&complement[i], &k, sizeof(bits_t));
      }
    }
  });

  const int index_bits = pixel_index_bits(d);
  bits_t* op = reinterpret_cast<bits_t*>(out.data_ptr<scalar_t>());
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, 2 * C * d));
  at::parallel_for(0, B * n, grain, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(d), scratch(d);
    std::vector<bits_t> mask(d);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t b = s / n, j = s % n;
      // keep == 0 and keep == d need no keys at all.
      if (keep == 0 || keep == d) {
        std::fill(mask.begin(), mask.end(), keep == 0 ? bits_t(0) : ~bits_t(0));
      } else {
        sample_keys(seed, pixel_sample_id(b, j, n, shared), d, index_bits, keys.data());
        std::copy(keys.begin(), keys.end(), scratch.begin());
        std::nth_element(scratch.begin(), scratch.begin() + (keep - 1), scratch.end());
        const uint64_t threshold = scratch[keep - 1];  // keys are distinct: exactly keep are <= it
        for (int64_t i = 0; i < d; ++i) mask[i] = bits_t(0) - bits_t(keys[i] <= threshold);
      }
      const bits_t* src = encoded.data() + b * 2 * C * d;
      bits_t* dst = op + s * 2 * C * d;
      for (int64_t ch = 0; ch < 2 * C; ++ch) {
        for (int64_t i = 0; i < d; ++i) dst[ch * d + i] = src[ch * d + i] & mask[i];
      }
    }
  });
}

void ablate_pixels_out_cpu(const at::Tensor& x_in, int64_t keep, int64_t n, int64_t seed, bool shared,
                           const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                           at::Tensor& out) {
  check_ablate_pixels_args(x_in, keep, n, seed, mean, std);
  check_pixel_out(out, x_in, n);
  if (out.numel() == 0) return;
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_ablate_pixels_cpu", [&] {
    ablate_pixels_impl<scalar_t>(x, keep, n, static_cast<uint64_t>(seed), shared, mean, std, out);
  });
}

at::Tensor ablate_pixels_cpu(const at::Tensor& x, int64_t keep, int64_t n, int64_t seed, bool shared,
                             const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  check_ablate_pixels_args(x, keep, n, seed, mean, std);
  at::Tensor out = empty_output(pixel_ablated_shape(x, n), x.options());
  ablate_pixels_out_cpu(x, keep, n, seed, shared, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("ablate_pixels", &ablate_pixels_cpu);
  m.impl("ablate_pixels_out", &ablate_pixels_out_cpu);
}

}  // namespace fastsmooth
