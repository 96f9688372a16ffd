"""Argument checks shared by the public API. Every error names the argument, its value and the fix.

Two layers:

- shape and type checks of the low-level ops (``check_images``, ``check_int``, ...): cheap,
  no look at the values;
- the **input contract** of every smoother's public entry point, ``fastsmooth.evaluate``, the
  command line and training (``check_image_batch``, ``check_labels``, ``check_image_shape``):
  images are floating-point NCHW tensors (4-D; a single [C, H, W] image only where an API
  takes one image, as ``Smooth.certify``), finite, in [0, 1]; labels are integers in
  [0, num_classes); an empty batch (B = 0) is valid and gives empty results.

Numbers: every public argument that is a count or a level accepts any ``numbers.Integral`` /
``numbers.Real`` (Python, NumPy scalars) and 0-d tensors (``check_int``, ``check_real``).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """x must be a 4-D (B, C, H, W) floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {x.dtype}")
    return x


def _bound(value: int) -> str:
    """A range end as people read it (2**62, not 4611686018427387904)."""
    if abs(value) >= 1 << 20 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    if abs(value) >= 1 << 20 and (value + 1) & value == 0:
        return f"2**{value.bit_length()} - 1"
    return str(value)


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (no upper bound for ``high=None``).

    Accepts ``numbers.Integral`` (Python and NumPy integers) and 0-d integer tensors; a bool
    is refused (it is almost always a mistake)."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        if high is not None:
            what = f"in [{_bound(low)}, {_bound(high)}]"
        else:
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {_bound(low)}")
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def check_real(
    value: object,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the interval between low and high (open at an end if asked).

    Accepts ``numbers.Real`` (Python and NumPy scalars) and 0-d real tensors."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not math.isfinite(value) or not inside:
        if low == 0 and high == math.inf:
            what = "a positive finite number" if low_open else "a non-negative finite number"
        else:
            left = "(" if low_open or low == -math.inf else "["
            right = ")" if high_open or high == math.inf else "]"
            what = f"a finite number in {left}{low:g}, {high:g}{right}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


# -- the input contract ----------------------------------------------------------------------------
def check_image_batch(x: object, name: str = "x") -> torch.Tensor:
    """The input contract for a batch of images: a floating-point [B, C, H, W] tensor (B may
    be 0), every value finite and in [0, 1]. Returns x unchanged.

    The value check reads x once (on a GPU: one synchronization per call)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        hint = (f" (one image [C, H, W]: pass {name}[None]; grayscale images [B, H, W]: {name}[:, None])"
                if x.dim() == 3 else "")
        raise ValueError(f"{name} must be a 4-D batch of images [B, C, H, W], got shape {tuple(x.shape)}{hint}")
    check_image_values(x, name)
    return x


def check_image_values(x: torch.Tensor, name: str = "x") -> None:
    """Images (any shape) must be floating point, finite and in [0, 1]; the error names the
    first offending element."""
    if x.dtype not in FLOAT_DTYPES:
        scale = " (uint8 images: divide by 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16 images in [0, 1], got {x.dtype}{scale}")
    if x.numel() == 0:
        return
    bad = ~torch.isfinite(x) | (x < 0) | (x > 1)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        value = float(x[where])
        if not math.isfinite(value):
            raise ValueError(f"{name}{list(where)} = {value}: images must be finite (NaN and infinity have no certificate)")
        low, high = float(x.min()), float(x.max())
        fix = " (images in [0, 255]: divide by 255)" if high > 1 and high <= 255 else ""
        raise ValueError(f"{name}{list(where)} = {value!r}: images must lie in [0, 1], got values in "
                         f"[{low:g}, {high:g}]{fix}")


def check_single_image(x: object, name: str = "x") -> torch.Tensor:
    """The input contract for APIs that take one image: a [C, H, W] tensor, values as above."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a single image tensor [C, H, W], got {shape} "
                         "(for a batch [B, C, H, W] use the batched method)")
    check_image_values(x, name)
    return x


def check_labels(labels: object, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Integer class labels in [0, num_classes), as an int64 tensor (any shape)."""
    t = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.is_floating_point() and bool((t == t.round()).all()) and bool(torch.isfinite(t).all()):
            t = t.long()
        else:
            raise TypeError(f"{name} must be integer class indices, got dtype {t.dtype}")
    t = t.long()
    if t.numel():
        bad = (t < 0) | (t >= num_classes)
        if bool(bad.any()):
            where = int(bad.reshape(-1).nonzero()[0])
            at = f"{name}[{where}]" if t.dim() else name
            # num_classes = 2**62 stands for "unknown": say what is wrong without that bound
            bound = f" = [0, {num_classes})" if num_classes < 1 << 62 else ""
            raise ValueError(f"{at} = {int(t.reshape(-1)[where])}: labels must lie in [0, num_classes){bound} (-1 is "
                             "the abstain value, never a label); fix the labels or the number of classes "
                             "(--num-classes)")
    return t


def check_image_shape(shape: Sequence[int], expected: Sequence[int] | None, where: str) -> None:
    """Images of ``shape`` (C, H, W) must have the shape a model was trained on, when it is known."""
    if expected is not None and tuple(shape) != tuple(expected):
        raise ValueError(f"{where} has images of shape {tuple(shape)}, but the model was trained on "
                         f"{tuple(expected)} images; resize them (--image-size H W for an image folder)")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic type of the kernels: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_stats(
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    x: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-channel normalization constants as contiguous accumulation-dtype tensors on x's device."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError(f"mean and std must be given together, got mean={mean!r}, std={std!r}")
    channels = x.shape[1]
    out = []
    for name, value in (("mean", mean), ("std", std)):
        # Checked on the host, then moved: no device synchronization when x is on a GPU.
        t = torch.as_tensor(value, dtype=accumulation_dtype(x.dtype), device="cpu").reshape(-1)
        if t.numel() != channels:
            raise ValueError(f"{name} must have one entry per channel (C = {channels}), got {t.numel()}: {value!r}")
        if name == "std" and bool((t == 0).any()):
            raise ValueError(f"std must be nonzero, got {value!r}")
        out.append(t.to(x.device).contiguous())
    return out[0], out[1]


def check_out(
    out: torch.Tensor | None, shape: tuple[int, ...], x: torch.Tensor, *, channels_last_ok: bool = False
) -> None:
    """An out= tensor must have the result's shape, x's dtype and device, and be contiguous
    (or, where the op can write it, channels-last contiguous)."""
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be {x.dtype} on {x.device}, got {out.dtype} on {out.device}")
    if out.is_contiguous() or (channels_last_ok and out.is_contiguous(memory_format=torch.channels_last)):
        return
    layouts = "contiguous or channels-last contiguous" if channels_last_ok else "contiguous"
    raise ValueError(f"out must be {layouts}, got strides {out.stride()}")


def check_index_tensor(values: object, name: str, high: int, device: torch.device) -> torch.Tensor:
    """Integer indices in [0, high) as an int64 tensor (any shape)."""
    t = torch.as_tensor(values, device="cpu") if not isinstance(values, torch.Tensor) else values.detach().cpu()
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
        bad = t[(t < 0) | (t >= high)][0].item()
        raise ValueError(f"{name} must lie in [0, {high}), got {bad}")
    return t


def check_example(
    x: object, y: object, index: int, num_classes: int | None, shape: list[tuple[int, ...]]
) -> tuple[torch.Tensor, int]:
    """One (image, label) item of a data set under the input contract: (image [C, H, W], int label).

    ``shape`` carries the first image's shape between calls: every image of a data set must
    have it. ``num_classes`` None skips the label's range check (any integer >= 0 passes)."""
    image = torch.as_tensor(x)
    if image.dim() != 3:
        hint = " (grayscale images [H, W]: add the channel axis)" if image.dim() == 2 else ""
        raise ValueError(f"image {index} of the data has shape {tuple(image.shape)}, expected [C, H, W]{hint}")
    check_image_values(image, f"image {index}")
    if not shape:
        shape.append(tuple(image.shape))
    elif tuple(image.shape) != shape[0]:
        raise ValueError(f"image {index} has shape {tuple(image.shape)}, image 0 has {shape[0]}: all images must "
                         "have one size and mode (resize them: --image-size H W for an image folder)")
    if isinstance(y, torch.Tensor):
        if y.numel() != 1:
            raise ValueError(f"the label of image {index} must be one class index, got shape {tuple(y.shape)}")
        y = y.reshape(())
    label = int(check_labels(y, num_classes if num_classes is not None else 1 << 62, f"label of image {index}"))
    return image, label
