"""Fake (meta) kernels of the compiled ops, so torch.compile can trace code that calls them.

Imported by fastsmooth._backend right after fastsmooth._C loads (the schemas must exist first).
"""
from __future__ import annotations

import torch


@torch.library.register_fake("fastsmooth::ablate")
def _ablate_fake(x, rows, cols, tiles, tile_h, tile_w, mean, std):
    B, C, H, W = x.shape
    return x.new_empty((B * rows.shape[1], 2 * C, H, W))


@torch.library.register_fake("fastsmooth::ablate_out")
def _ablate_out_fake(x, rows, cols, tiles, tile_h, tile_w, mean, std, out):
    return None


@torch.library.register_fake("fastsmooth::gaussian_noise")
def _gaussian_noise_fake(x, sigma, n, seed, start, count):
    _, C, H, W = x.shape
    return x.new_empty((count, C, H, W))


@torch.library.register_fake("fastsmooth::gaussian_noise_out")
def _gaussian_noise_out_fake(x, sigma, n, seed, start, count, out):
    return None


# l0 pixel ablation (fastsmooth/ops/pixel_ablation).
@torch.library.register_fake("fastsmooth::ablate_pixels")
def _ablate_pixels_fake(x, keep, n, seed, shared, mean, std):
    B, C, H, W = x.shape
    return x.new_empty((B * n, 2 * C, H, W))


@torch.library.register_fake("fastsmooth::ablate_pixels_out")
def _ablate_pixels_out_fake(x, keep, n, seed, shared, mean, std, out):
    return None


# --- l1 splitting ops (fastsmooth/ops/splitting) ---


@torch.library.register_fake("fastsmooth::dssn_split")
def _dssn_split_fake(x, offsets, template, levels, q, general):
    B, C, H, W = x.shape
    return x.new_empty((B * offsets.shape[1], C, H, W))


@torch.library.register_fake("fastsmooth::ssn_noise")
def _ssn_noise_fake(x, lam, n, seed):
    B, C, H, W = x.shape
    return x.new_empty((B * n, C, H, W))


@torch.library.register_fake("fastsmooth::uniform_noise")
def _uniform_noise_fake(x, lam, n, seed):
    B, C, H, W = x.shape
    return x.new_empty((B * n, C, H, W))


# --- smoothed-ViT token extraction (fastsmooth/ops/tokens) ---


@torch.library.register_fake("fastsmooth::ablate_tokens")
def _ablate_tokens_fake(x, rows, cols, tiles, tile_h, tile_w, tokens, patch_h, patch_w, mean, std, normalize_fill):
    B, C, _, _ = x.shape
    return x.new_empty((B * rows.shape[1], tokens.shape[2], C * patch_h * patch_w))


@torch.library.register_fake("fastsmooth::ablate_tokens_out")
def _ablate_tokens_out_fake(x, rows, cols, tiles, tile_h, tile_w, tokens, patch_h, patch_w, mean, std,
                            normalize_fill, out):
    return None


# --- PatchCleanser double masking (fastsmooth/ops/mask_pairs) ---


@torch.library.register_fake("fastsmooth::mask_pairs")
def _mask_pairs_fake(x, images, rects, fill, mean, std):
    _, C, H, W = x.shape
    return x.new_empty((images.shape[0], C, H, W))


@torch.library.register_fake("fastsmooth::mask_pairs_out")
def _mask_pairs_out_fake(x, images, rects, fill, mean, std, out):
    return None
