"""Fused tensor ops: NCHW tensors in, tensors out, on the input's device.

Each op takes ``backend="auto" | "reference" | "cpu" | "triton" | "cuda"``.
"""
from fastsmooth.ops.ablation import (
    ablate_bands,
    ablate_blocks,
    ablate_multi_bands,
    ablate_multi_blocks,
    ablate_random_band,
    ablate_random_block,
    ablate_with_masks,
    band_combinations,
    block_combinations,
    encode,
)
from fastsmooth.ops.gaussian import gaussian_noise
from fastsmooth.ops.mask_pairs import mask_pairs, mask_set
from fastsmooth.ops.pixel_ablation import ablate_pixels, ablate_pixels_train
from fastsmooth.ops.tokens import ablate_tokens, band_tokens, block_tokens, multi_band_tokens, multi_block_tokens
from fastsmooth.ops.splitting import (
    dssn_levels,
    dssn_split,
    dssn_split_random,
    dssn_template,
    ssn_noise,
    uniform_noise,
)

__all__ = [
    "encode",
    "ablate_bands",
    "ablate_blocks",
    "ablate_multi_bands",
    "ablate_multi_blocks",
    "ablate_random_band",
    "ablate_random_block",
    "ablate_with_masks",
    "band_combinations",
    "block_combinations",
    "gaussian_noise",
    "ablate_pixels",
    "ablate_pixels_train",
    "dssn_levels",
    "dssn_template",
    "dssn_split",
    "dssn_split_random",
    "ssn_noise",
    "uniform_noise",
    "ablate_tokens",
    "band_tokens",
    "block_tokens",
    "multi_band_tokens",
    "multi_block_tokens",
    "mask_pairs",
    "mask_set",
]
