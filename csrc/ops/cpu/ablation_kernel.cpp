// CPU kernel of fastsmooth::ablate (OpenMP through at::parallel_for).
//
// Two passes: every input element is read and encoded once into a small [B, 2C, H, W] buffer,
// then each output sample is written front to back under its masks. Sequential stores run at
// close to the machine's copy bandwidth (an earlier version that scattered each input row to
// its 2P output rows was four times slower). Stores go through same-width unsigned integers
// so that the masked copy vectorizes for every dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "../ablation_args.h"
#include "output.h"
#include "stream.h"

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

// dst = a & b, byte by byte (the keep words are all-ones or all-zeros, so this is the masked
// copy for every dtype). One clone per vector width, picked at load time for the running CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void and_bytes(void* dst, const void* a, const void* b, size_t n) {
  uint8_t* __restrict d = static_cast<uint8_t*>(dst);
  const uint8_t* __restrict x = static_cast<const uint8_t*>(a);
  const uint8_t* __restrict y = static_cast<const uint8_t*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = x[i] & y[i];
}

constexpr int64_t kGrain = int64_t(1) << 18;

template <typename scalar_t>
void ablate_images(const at::Tensor& x, const KeepMasks& masks, const std::optional<at::Tensor>& mean,
                   const std::optional<at::Tensor>& std, at::Tensor& out, bool channels_last) {
  using acc_t = at::opmath_type<scalar_t>;
  using bits_t = typename BitsOf<sizeof(scalar_t)>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = masks.P;
  const int64_t plane = H * W, sample = 2 * C * plane;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  bits_t* op = reinterpret_cast<bits_t*>(out.data_ptr<scalar_t>());
  const acc_t* mp = mean.has_value() ? mean->data_ptr<acc_t>() : nullptr;
  const acc_t* sp = std.has_value() ? std->data_ptr<acc_t>() : nullptr;

  // Pass 1: read and encode every input element once, as output-dtype bits in the output's
  // layout ([B, 2C, H, W], or [B, H, W, 2C] for channels-last): 1 / P of the output's size,
  // so it stays in cache while pass 2 reads it P times.
  std::vector<bits_t> encoded(static_cast<size_t>(B * sample));
  // Grain sizes: a thread gets at least ~kGrain output elements. Waking the pool costs tens of
  // microseconds, more than writing a few hundred kilobytes (the smoothers' batches of small
  // images) on one core.
  at::parallel_for(0, B * C, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, 2 * P * plane)), [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const scalar_t* xr = xp + bc * plane;
      bits_t* e_img = encoded.data() + b * sample;
      for (int64_t i = 0; i < plane; ++i) {
        const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xr[i]), mp, sp, c);
        const scalar_t v = static_cast<scalar_t>(e.value), k = static_cast<scalar_t>(e.complement);
        const int64_t at_v = channels_last ? i * 2 * C + c : c * plane + i;
        const int64_t at_k = channels_last ? at_v + C : at_v + C * plane;
        std::memcpy(&e_img[at_v], &v, sizeof(bits_t));
        std::memcpy(&e_img[at_k], &k, sizeof(bits_t));
      }
    }
  });

  // Pass 2: every output sample (b, p) is written front to back, one contiguous stream of
  // stores per thread, as an AND of the encoded image with all-ones / all-zeros keep words
  // (and_bytes). The keep words are expanded once per sample into one [H, W] plane that
  // serves the 2C channel planes (NCHW, whose rows are as short as 28 elements), or into
  // one [W, 2C] row pattern per kept image row (channels-last). Outputs larger than the
  // cache go out through streaming stores (stream.h).
  const int64_t row = channels_last ? W * 2 * C : W;  // words per pattern row
  const size_t plane_bytes = static_cast<size_t>(plane) * sizeof(bits_t);
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(bits_t);
  const bool streaming = out.nbytes() >= static_cast<size_t>(kStreamingStoreBytes);
  at::parallel_for(0, B * P, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, sample)), [&](int64_t begin, int64_t end) {
    std::vector<bits_t> keep(channels_last ? row : plane), col_words(row);
    std::optional<StreamingWriter> writer;
    if (streaming) writer.emplace(std::max<size_t>(16384, channels_last ? row_bytes : plane_bytes));
    auto target = [&](bits_t* dst, size_t bytes) {
      return writer ? static_cast<bits_t*>(writer->reserve(dst, bytes)) : dst;
    };
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / P, p = bp % P;
      const uint8_t* rm = masks.rows + masks.slot(b, p) * H;
      const uint8_t* cm = masks.cols + masks.slot(b, p) * W;
      for (int64_t j = 0; j < row; ++j) col_words[j] = bits_t(0) - bits_t(cm[channels_last ? j / (2 * C) : j] != 0);
      const bits_t* src = encoded.data() + b * sample;
      bits_t* dst = op + bp * sample;
      // The keep words of image row h: zeros, the column pattern, or (tiles) built here.
      auto row_keep = [&](int64_t h, bits_t* k_row) -> const bits_t* {
        if (rm[h] == 0) {
          std::memset(k_row, 0, row_bytes);
          return k_row;
        }
        if (masks.tiles == nullptr) return col_words.data();
        for (int64_t j = 0; j < row; ++j)
          k_row[j] = bits_t(0) - bits_t(masks.kept(b, p, h, channels_last ? j / (2 * C) : j));
        return k_row;
      };
      if (channels_last) {
        for (int64_t h = 0; h < H; ++h)
          and_bytes(target(dst + h * row, row_bytes), src + h * row, row_keep(h, keep.data()), row_bytes);
      } else {
        for (int64_t h = 0; h < H; ++h) {
          bits_t* k_row = keep.data() + h * W;
          const bits_t* k = row_keep(h, k_row);
          if (k != k_row) std::memcpy(k_row, k, row_bytes);
        }
        for (int64_t ch = 0; ch < 2 * C; ++ch)
          and_bytes(target(dst + ch * plane, plane_bytes), src + ch * plane, keep.data(), plane_bytes);
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
  const bool channels_last = is_channels_last_output(out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fastsmooth_ablate_cpu",
                                  [&] { ablate_images<scalar_t>(x, masks, mean, std, out, channels_last); });
}

at::Tensor ablate_cpu(const at::Tensor& x, const at::Tensor& rows, const at::Tensor& cols,
                      const std::optional<at::Tensor>& tiles, int64_t tile_h, int64_t tile_w,
                      const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& std) {
  check_ablate_args(x, rows, cols, tiles, tile_h, tile_w, mean, std);
  at::Tensor out = empty_output(ablated_shape(x, rows.size(1)), x.options());
  ablate_out_cpu(x, rows, cols, tiles, tile_h, tile_w, mean, std, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsmooth, CPU, m) {
  m.impl("ablate", &ablate_cpu);
  m.impl("ablate_out", &ablate_out_cpu);
}

}  // namespace fastsmooth
