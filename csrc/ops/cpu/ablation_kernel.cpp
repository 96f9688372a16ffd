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
#include <memory>
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

// An encoded value as the output dtype's bits (the words the keep masks are ANDed with).
template <typename scalar_t, typename bits_t, typename acc_t>
bits_t to_bits(acc_t value) {
  const scalar_t v = static_cast<scalar_t>(value);
  bits_t out;
  std::memcpy(&out, &v, sizeof(bits_t));
  return out;
}

// Where `bytes` of output for `dst` are written: straight there, or into the streaming
// writer's staging buffer when the output goes out through streaming stores (stream.h).
template <typename bits_t>
bits_t* staged(std::optional<StreamingWriter>& writer, bits_t* dst, size_t bytes) {
  return writer ? static_cast<bits_t*>(writer->reserve(dst, bytes)) : dst;
}

// The keep words of one ablation, image row by image row: all-ones / all-zeros words in the
// output's row layout ([W], or [W, 2C] for channels-last). One per thread.
template <typename bits_t>
class KeepRows {
 public:
  KeepRows(const KeepMasks& masks, int64_t C, bool channels_last)
      : masks_(masks), words_per_pixel_(channels_last ? 2 * C : 1), cols_(masks.W * words_per_pixel_),
        scratch_(cols_.size()) {}

  // Selects ablation p of image b, expanding its column mask once.
  void select(int64_t b, int64_t p) {
    b_ = b, p_ = p;
    rows_ = masks_.rows + masks_.slot(b, p) * masks_.H;
    const uint8_t* cm = masks_.cols + masks_.slot(b, p) * masks_.W;
    for (size_t j = 0; j < cols_.size(); ++j) cols_[j] = bits_t(0) - bits_t(cm[j / words_per_pixel_] != 0);
  }
  bool dropped(int64_t h) const { return rows_[h] == 0; }
  // The words of a row that is not dropped; valid until the next call.
  const bits_t* kept(int64_t h) {
    if (masks_.tiles == nullptr) return cols_.data();
    for (size_t j = 0; j < scratch_.size(); ++j)
      scratch_[j] = bits_t(0) - bits_t(masks_.kept(b_, p_, h, static_cast<int64_t>(j) / words_per_pixel_));
    return scratch_.data();
  }

 private:
  const KeepMasks& masks_;
  int64_t words_per_pixel_, b_ = 0, p_ = 0;
  const uint8_t* rows_ = nullptr;
  std::vector<bits_t> cols_, scratch_;
};

// One ablation per image (P = 1: forwards of single images, as ImageNet at batch 1): the two
// passes below would write and read back an encoded copy of the image for a single use, so
// each output row is encoded straight from the input instead, zeros where the mask drops.
template <typename scalar_t, typename acc_t, typename bits_t>
void ablate_once_each(const scalar_t* xp, const KeepMasks& masks, const acc_t* mp, const acc_t* sp, bits_t* op,
                      int64_t B, int64_t C, bool channels_last, bool streaming) {
  const int64_t H = masks.H, W = masks.W, plane = H * W, sample = 2 * C * plane;
  const int64_t row = channels_last ? W * 2 * C : W, rows_per_image = channels_last ? H : 2 * C * H;
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(bits_t);
  at::parallel_for(0, B * rows_per_image, std::max<int64_t>(1, kGrain / row), [&](int64_t begin, int64_t end) {
    KeepRows<bits_t> keep(masks, C, channels_last);
    std::optional<StreamingWriter> writer;
    if (streaming) writer.emplace(std::max<size_t>(16384, row_bytes));
    int64_t selected = -1;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / rows_per_image, r = unit % rows_per_image, h = r % H;
      if (b != selected) keep.select(b, 0), selected = b;
      // NCHW: unit r is row h of channel r / H; channels-last: image row r = h, all channels.
      bits_t* out_row = op + b * sample + (channels_last ? h * row : (r / H) * plane + h * W);
      bits_t* d = staged(writer, out_row, row_bytes);
      if (keep.dropped(h)) {
        std::memset(d, 0, row_bytes);
        continue;
      }
      const bits_t* k = keep.kept(h);
      const scalar_t* x_img = xp + b * C * plane + h * W;
      if (channels_last) {  // channel by channel: the inner loop reads one input row
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* xr = x_img + c * plane;
          for (int64_t w = 0; w < W; ++w) {
            const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xr[w]), mp, sp, c);
            const int64_t j = w * 2 * C + c;
            d[j] = to_bits<scalar_t, bits_t>(e.value) & k[j];
            d[j + C] = to_bits<scalar_t, bits_t>(e.complement) & k[j + C];
          }
        }
      } else {
        const int64_t ch = r / H, c = ch % C;
        const scalar_t* xr = x_img + c * plane;
        for (int64_t w = 0; w < W; ++w) {
          const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xr[w]), mp, sp, c);
          d[w] = to_bits<scalar_t, bits_t>(ch < C ? e.value : e.complement) & k[w];
        }
      }
    }
  });
}

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
  const bool streaming = out.nbytes() >= static_cast<size_t>(kStreamingStoreBytes);
  if (P == 1) {
    ablate_once_each<scalar_t, acc_t, bits_t>(xp, masks, mp, sp, op, B, C, channels_last, streaming);
    return;
  }

  // Pass 1: read and encode every input element once, as output-dtype bits in the output's
  // layout ([B, 2C, H, W], or [B, H, W, 2C] for channels-last): 1 / P of the output's size,
  // so it stays in cache while pass 2 reads it P times.
  std::unique_ptr<bits_t[]> encoded(new bits_t[static_cast<size_t>(B * sample)]);  // (not zero-filled)
  // Grain sizes: a thread gets at least ~kGrain output elements. Waking the pool costs tens of
  // microseconds, more than writing a few hundred kilobytes (the smoothers' batches of small
  // images) on one core.
  at::parallel_for(0, B * C, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, 2 * P * plane)), [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const scalar_t* xr = xp + bc * plane;
      bits_t* e_img = encoded.get() + b * sample;
      for (int64_t i = 0; i < plane; ++i) {
        const EncodedPair<acc_t> e = encode_element<acc_t>(static_cast<acc_t>(xr[i]), mp, sp, c);
        const int64_t at_v = channels_last ? i * 2 * C + c : c * plane + i;
        e_img[at_v] = to_bits<scalar_t, bits_t>(e.value);
        e_img[channels_last ? at_v + C : at_v + C * plane] = to_bits<scalar_t, bits_t>(e.complement);
      }
    }
  });

  // Pass 2: every output sample (b, p) is written front to back, one contiguous stream of
  // stores per thread, as an AND of the encoded image with all-ones / all-zeros keep words
  // (and_bytes). The keep words are expanded once per sample into one [H, W] plane that
  // serves the 2C channel planes (NCHW, whose rows are as short as 28 elements), or row by
  // row into [W, 2C] patterns (channels-last), whose dropped rows are written as zeros
  // without reading the encoded image. Outputs larger than the cache go out through
  // streaming stores (stream.h).
  const int64_t row = channels_last ? W * 2 * C : W;  // words per output row
  const size_t plane_bytes = static_cast<size_t>(plane) * sizeof(bits_t);
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(bits_t);
  at::parallel_for(0, B * P, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, sample)), [&](int64_t begin, int64_t end) {
    KeepRows<bits_t> keep_rows(masks, C, channels_last);
    std::vector<bits_t> keep_plane(channels_last ? 0 : plane);
    std::optional<StreamingWriter> writer;
    if (streaming) writer.emplace(std::max<size_t>(16384, channels_last ? row_bytes : plane_bytes));
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / P, p = bp % P;
      keep_rows.select(b, p);
      const bits_t* src = encoded.get() + b * sample;
      bits_t* dst = op + bp * sample;
      if (channels_last) {
        for (int64_t h = 0; h < H; ++h) {
          bits_t* d = staged(writer, dst + h * row, row_bytes);
          if (keep_rows.dropped(h))
            std::memset(d, 0, row_bytes);
          else
            and_bytes(d, src + h * row, keep_rows.kept(h), row_bytes);
        }
      } else {
        for (int64_t h = 0; h < H; ++h) {
          bits_t* k_row = keep_plane.data() + h * W;
          if (keep_rows.dropped(h))
            std::memset(k_row, 0, row_bytes);
          else
            std::memcpy(k_row, keep_rows.kept(h), row_bytes);
        }
        for (int64_t ch = 0; ch < 2 * C; ++ch)
          and_bytes(staged(writer, dst + ch * plane, plane_bytes), src + ch * plane, keep_plane.data(), plane_bytes);
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
