// CPU kernel of fastsmooth::ablate (OpenMP through at::parallel_for).
//
// Work is split over input rows (b, c, h): a row of x is read and encoded once into two small
// buffers, then copied under the column mask into the 2 * P output rows it feeds. Stores go
// through same-width unsigned integers so that the masked copy vectorizes for every dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "../ablation_args.h"

namespace fastsmooth {
namespace {

template <size_t N>
struct BitsOf;
template <>
struct BitsOf<2> { using type = uint16_t; };
template <>
struct BitsOf<4> { using type = uint32_t; };
template <>
struct BitsOf<8> { using type = uint64_t; };

template <typename scalar_t>
void ablate_rows(const at::Tensor& x, const KeepMasks& masks, const std::optional<at::Tensor>& mean,
                 const std::optional<at::Tensor>& std, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  using bits_t = typename BitsOf<sizeof(scalar_t)>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = masks.P;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const acc_t* mp = mean.has_value() ? mean->data_ptr<acc_t>() : nullptr;
  const acc_t* sp = std.has_value() ? std->data_ptr<acc_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, 2 * P * W));

  at::parallel_for(0, B * C * H, grain, [&](int64_t begin, int64_t end) {
    std::vector<bits_t> value(W), complement(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (C * H), c = (row / H) % C, h = row % H;
      const scalar_t* xr = xp + row * W;
      for (int64_t w = 0; w < W; ++w) {
        const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xr[w]), mp, sp, c);
        const scalar_t v = static_cast<scalar_t>(e.value), k = static_cast<scalar_t>(e.complement);
        std::memcpy(&value[w], &v, sizeof(bits_t));
        std::memcpy(&complement[w], &k, sizeof(bits_t));
      }
      for (int64_t p = 0; p < P; ++p) {
        bits_t* ov = reinterpret_cast<bits_t*>(op + ablated_offset(b, p, c, h, 0, P, C, H, W));
        bits_t* oc = reinterpret_cast<bits_t*>(op + ablated_offset(b, p, C + c, h, 0, P, C, H, W));
        if (!masks.row_kept(b, p, h)) {
          std::memset(ov, 0, W * sizeof(bits_t));
          std::memset(oc, 0, W * sizeof(bits_t));
          continue;
        }
        if (masks.tiles == nullptr) {
          const uint8_t* cm = masks.cols + masks.slot(b, p) * W;
          for (int64_t w = 0; w < W; ++w) {
            const bits_t keep = bits_t(0) - bits_t(cm[w] != 0);  // all ones or all zeros
            ov[w] = value[w] & keep;
            oc[w] = complement[w] & keep;
          }
        } else {
          for (int64_t w = 0; w < W; ++w) {
            const bits_t keep = masks.kept(b, p, h, w) ? ~bits_t(0) : bits_t(0);
            ov[w] = value[w] & keep;
            oc[w] = complement[w] & keep;
          }
        }
      }
    }
  });
}

void ablate_out_cpu(const at::Tensor& x_in, const at::Tensor& rows, const at::Tensor& cols,
                           const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                           const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std,
                           at::Tensor& out) {
  const KeepMasks masks = check_ablate_args(x_in, rows, cols, tiles, tile_h, tile_w, mean, std);
  check_out(out, x_in, masks.P);
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_ablate_cpu",
                                  [&] { ablate_rows<scalar_t>(x, masks, mean, std, out); });
}

at::Tensor ablate_cpu(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                      const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                      const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  check_ablate_args(x, rows, cols, tiles, tile_h, tile_w, mean, std);
  at::Tensor out = at::empty(ablated_shape(x, rows.size(1)), x.options());
  ablate_out_cpu(x, rows, cols, tiles, tile_h, tile_w, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("ablate", &ablate_cpu);
  m.impl("ablate_out", &ablate_out_cpu);
}

}  // namespace fastsmooth
