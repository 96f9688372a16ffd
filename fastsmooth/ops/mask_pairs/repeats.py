"""Which mask pairs give an image the identical model input (PatchCleanser, semantics.md §15).

Masking a pixel whose written value already equals ``fill`` in every channel changes nothing,
so two pairs whose masks cover the same set of the image's other pixels write the same input,
bit for bit, and the model's answer on one is its answer on the other. Digits on a black
background (fill 0) repeat about half of their 666 pairs; natural images, whose pixels almost
never equal the fill exactly, repeat none, and cost only the check below.
"""
from __future__ import annotations

import numpy as np
import torch

from fastsmooth.ops.mask_pairs.geometry import MaskSet

__all__ = ["blank_pixels", "input_keys", "pair_keys"]

_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def blank_pixels(written: torch.Tensor, fill_written: torch.Tensor) -> torch.Tensor:
    """bool [B, H, W]: pixels whose written value (the op's kept pixels, [B, C, H, W]) equals the
    written fill (a scalar tensor of the same dtype) bit for bit in every channel (so -0.0 is
    not 0.0: the model sees the bits)."""
    as_int = _SAME_SIZE_INT[written.element_size()]
    return (written.view(as_int) == fill_written.reshape(1).view(as_int)).all(dim=1)


def pair_keys(num_masks: int) -> np.ndarray:
    """int64 [M, M]: one key per unordered pair (i, j), i.e. no two pairs share an input."""
    index = np.arange(num_masks)
    low, high = np.minimum(index[:, None], index[None, :]), np.maximum(index[:, None], index[None, :])
    return low * num_masks + high


#: Random odd multipliers of the 64-bit words of a pair's covered set (fixed: the keys of a call
#: do not depend on a random state). The hash only groups candidates; equality is then checked
#: on the words themselves, so a collision costs time, never a wrong key.
_MULTIPLIERS = np.random.default_rng(0x5EED).integers(1, 2**63, size=4096, dtype=np.uint64) | np.uint64(1)

#: Images per step of :func:`input_keys`: bounds its temporary arrays (pairs x words per image).
_STEP_BYTES = 64 << 20


def input_keys(blank: torch.Tensor, masks: MaskSet) -> np.ndarray:
    """int64 [B, M, M] in [0, M * M), symmetric: pairs (i, j) and (k, l) of image b have the same
    key iff their masks cover the same non-blank pixels of b (then both inputs are identical).
    Images whose masks cover no blank pixel get :func:`pair_keys` (distinct pairs: no check
    needed)."""
    B = blank.shape[0]
    M = masks.count
    covered = (~masks.keep()).reshape(M, -1).numpy()  # [M, H * W]
    blank = blank.reshape(B, -1).cpu().numpy()
    keys = np.broadcast_to(pair_keys(M), (B, M, M)).copy()
    some = np.flatnonzero((blank & covered.any(axis=0)[None, :]).any(axis=1))
    if len(some) == 0:
        return keys
    upper_i, upper_j = np.triu_indices(M)  # pairs i <= j, one-mask pairs included
    words = (covered.shape[1] + 63) // 64
    step = min(1 << 16, max(1, _STEP_BYTES // (len(upper_i) * words * 8)))
    for start in range(0, len(some), step):
        images = some[start : start + step]
        # each mask's non-blank covered pixels of each image, as 64-bit words [n, M, words]
        bits = np.packbits(covered[None, :, :] & ~blank[images, None, :], axis=2)
        bits = np.pad(bits, ((0, 0), (0, 0), (0, words * 8 - bits.shape[2])))
        sets = bits.view(np.uint64)
        union = sets[:, upper_i] | sets[:, upper_j]  # [n, pairs, words]
        ids = _group(union.reshape(-1, words), np.repeat(np.arange(len(images)), len(upper_i)))
        ids = ids.reshape(len(images), -1)
        ids -= ids.min(axis=1, keepdims=True)  # an image's groups are consecutive: its keys from 0
        for row, b in enumerate(images.tolist()):
            keys[b, upper_i, upper_j] = ids[row]
            keys[b, upper_j, upper_i] = ids[row]
    return keys


def _group(rows: np.ndarray, image: np.ndarray) -> np.ndarray:
    """int64 [R]: equal ids exactly for equal (image, rows[r]) (rows: uint64 [R, words]; image
    < 2**16, sorted), each image's ids consecutive."""
    with np.errstate(over="ignore"):  # the hash wraps modulo 2**64 on purpose
        hashed = (rows * _MULTIPLIERS[: rows.shape[1]]).sum(axis=1, dtype=np.uint64)
    # one sort key: the image in the top 16 bits, 48 bits of the hash below
    key = (image.astype(np.uint64) << np.uint64(48)) | (hashed >> np.uint64(16))
    order = np.argsort(key, kind="stable")
    same_key = np.flatnonzero(key[order][1:] == key[order][:-1])
    if not (rows[order[same_key + 1]] == rows[order[same_key]]).all():  # a collision: sort on every word
        order = np.lexsort((*rows.T[::-1], image))
        sorted_rows = rows[order]
        same = (image[order][1:] == image[order][:-1]) & (sorted_rows[1:] == sorted_rows[:-1]).all(axis=1)
    else:
        same = np.zeros(len(rows) - 1, dtype=bool)
        same[same_key] = True
    group = np.concatenate([[0], np.cumsum(~same)])
    ids = np.empty(len(rows), dtype=np.int64)
    ids[order] = group
    return ids
