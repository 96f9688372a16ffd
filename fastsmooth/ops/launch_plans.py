"""Launch plans of every GPU kernel: grid, threads and work per thread, without a GPU.

A plan is what a kernel launch exposes to the GPU: ``grid`` (blocks, or Triton programs),
``threads`` per block (CUDA) or per program (Triton: ``num_warps * 32``), ``chunk`` (items of
the kernel's inner axis, such as ablations or DSSN evaluations, one thread or program handles;
1 for kernels without one) and ``work`` (outputs one thread writes, at most). ``lanes`` is
grid x threads, the parallelism the launch offers.

- CUDA: ``cuda_plan(kernel, *sizes)`` asks the compiled extension, which computes the plan with
  the very functions the launchers call (csrc/ops/common/launch_plan.h); it works in the
  CPU-only build too.
- Triton: the ``triton_*`` functions below are what the launchers in ``*/triton_kernel.py``
  call to pick their grid and meta-parameters (``meta``); they need neither triton nor a GPU.

Every plan follows one rule: at least ``lane_target(outputs)`` = min(ceil(outputs / 8), 2^20)
lanes, i.e. one image's batch fills a GPU and, below 2^20 lanes (about four waves of a 132-SM
GPU), no lane writes more than 8 outputs. Kernels with an inner axis split it into chunks only
as far as that takes, since each chunk re-reads its input elements.

New kernels follow the same pattern: a plan function here (Triton) or in launch_plan.h plus a
``cuda_launch_plan`` entry (CUDA), used by the launcher, and a case in tests/test_launch_plans.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

LANE_CAP = 1 << 20  # lanes beyond which the plans stop splitting work further
OUTPUTS_PER_LANE = 8  # the most outputs a lane writes while below LANE_CAP
WARP = 32

__all__ = [
    "LaunchPlan",
    "lane_target",
    "cuda_plan",
    "CUDA_KERNELS",
    "triton_ablate",
    "triton_ablate_pixels",
    "triton_gaussian_noise",
    "triton_dssn_split",
    "triton_noise",
    "triton_ablate_tokens",
    "triton_mask_pairs",
]


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """One kernel launch: ``grid`` (x, y, z) blocks or programs of ``threads`` each.

    ``meta`` holds a Triton launch's meta-parameters (``BLOCK``..., ``num_warps``), passed to
    the kernel as keyword arguments; empty for CUDA plans."""

    kernel: str
    grid: tuple[int, int, int]
    threads: int
    chunk: int = 1
    work: int = 0
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def lanes(self) -> int:
        """Threads the launch exposes: blocks x threads per block, or programs x num_warps x 32."""
        return self.programs * self.threads


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def lane_target(outputs: int) -> int:
    """Lanes a launch writing ``outputs`` elements must expose: min(ceil(outputs / 8), 2^20)."""
    return min(cdiv(outputs, OUTPUTS_PER_LANE), LANE_CAP)


def chunk_for_target(items: int, lanes_per_chunk: int, outputs: int, max_chunk: int) -> int:
    """The largest chunk of ``items`` per thread / program such that ``lanes_per_chunk`` lanes per
    chunk still reach ``lane_target(outputs)``, capped at ``max_chunk`` (as launch_plan.h)."""
    if items <= 0 or lanes_per_chunk <= 0:
        return 1
    needed = max(1, cdiv(lane_target(outputs), lanes_per_chunk))
    return max(1, min(max_chunk, items // needed))


# --- CUDA -------------------------------------------------------------------------------------

CUDA_KERNELS = {
    "ablate": ("B", "C", "H", "W", "P"),
    "ablate_pixels": ("samples", "C", "d"),
    "gaussian_noise": ("count", "D"),
    "dssn_split": ("B", "d", "K"),
    "noise": ("B", "d", "n"),
    "ablate_tokens": ("samples", "per_sample"),
    "mask_pairs": ("rows", "per_row"),
}


def cuda_plan(kernel: str, *sizes: int) -> LaunchPlan:
    """The launch the CUDA ``kernel`` gets for ``sizes`` (names in ``CUDA_KERNELS[kernel]``),
    computed by the compiled extension with the launcher's own code; no GPU needed.

    Raises RuntimeError without the compiled extension, ValueError for an unknown kernel."""
    from fastsmooth._backend import _load_extension

    module, reason = _load_extension()
    if module is None:
        raise RuntimeError(f"cuda_plan needs the compiled extension: {reason}")
    if kernel not in CUDA_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(CUDA_KERNELS)}, got {kernel!r}")
    plan = module.cuda_launch_plan(kernel, *(int(s) for s in sizes))
    return LaunchPlan(kernel, tuple(plan["grid"]), plan["block"], plan["chunk"], plan["work"])


# --- Triton -----------------------------------------------------------------------------------

ABLATE_TILE = 256  # padded elements of one structured-ablation program's [pixels, channels] tile
ABLATE_MAX_CHUNK = 1024
ABLATE_WARPS = 4


def triton_ablate(B: int, C: int, H: int, W: int, P: int) -> LaunchPlan:
    """``_ablate_kernel``: a program owns a tile of BLOCK_PIX pixels x all C channels (padded to
    BLOCK_C) of one image and a chunk of consecutive ablations; 1-D grid numbered (chunk, image,
    tile), tiles fastest."""
    block_c = next_power_of_2(C)
    block_pix = max(1, min(next_power_of_2(H * W), ABLATE_TILE // block_c))
    tiles = cdiv(H * W, block_pix)
    lanes_per_chunk = B * tiles * ABLATE_WARPS * WARP
    outputs = B * P * 2 * C * H * W
    chunk = chunk_for_target(P, lanes_per_chunk, outputs, ABLATE_MAX_CHUNK)
    programs = B * tiles * cdiv(P, chunk) if outputs else 0
    return LaunchPlan(
        "ablate", (programs, 1, 1), ABLATE_WARPS * WARP, chunk,
        work=cdiv(2 * chunk * block_pix * C, ABLATE_WARPS * WARP),
        meta=dict(BLOCK_PIX=block_pix, BLOCK_C=block_c, num_warps=ABLATE_WARPS),
    )


PIXEL_MAX_BLOCK = 1024


def triton_ablate_pixels(samples: int, C: int, d: int) -> LaunchPlan:
    """``_ablate_pixels_kernel``: one program per output sample (it selects the sample's kept
    pixels, then writes them); num_warps grows from 4 up to 32 until the samples reach the
    lane target (a program's BLOCK elements give every lane at least one)."""
    block = min(next_power_of_2(d), PIXEL_MAX_BLOCK)
    target = lane_target(samples * 2 * C * d)
    warps = 4
    while samples * warps * WARP < target and warps < 32 and 2 * warps * WARP <= block:
        warps *= 2
    return LaunchPlan(
        "ablate_pixels", (samples, 1, 1), warps * WARP, 1, work=cdiv(2 * C * d, warps * WARP),
        meta=dict(BLOCK=block, num_warps=warps),
    )


GAUSSIAN_MAX_BLOCK = 256  # quads per program: 4 warps x 2 quads = 8 outputs per lane


def triton_gaussian_noise(count: int, D: int) -> LaunchPlan:
    """``_gaussian_noise_kernel``: a program owns BLOCK consecutive (sample, quad) pairs."""
    total = count * cdiv(D, 4)
    block = min(GAUSSIAN_MAX_BLOCK, next_power_of_2(total))
    return LaunchPlan(
        "gaussian_noise", (cdiv(total, block), 1, 1), 4 * WARP, 1, work=cdiv(4 * block, 4 * WARP),
        meta=dict(BLOCK=block, num_warps=4),
    )


DSSN_BLOCK = 256
DSSN_MAX_K_BLOCK = 16


def triton_dssn_split(B: int, d: int, K: int) -> LaunchPlan:
    """``_dssn_kernel``: a program owns BLOCK elements of one image (x and offsets loaded once)
    and K_BLOCK consecutive evaluations (a power of two, so few variants compile)."""
    block = min(DSSN_BLOCK, next_power_of_2(d))
    chunks = cdiv(d, block)
    k_block = chunk_for_target(K, B * chunks * 4 * WARP, B * K * d, DSSN_MAX_K_BLOCK)
    k_block = 1 << (k_block.bit_length() - 1)  # round down to a power of two
    return LaunchPlan(
        "dssn_split", (B * chunks, cdiv(K, k_block), 1), 4 * WARP, k_block,
        work=cdiv(block * k_block, 4 * WARP), meta=dict(BLOCK=block, K_BLOCK=k_block, num_warps=4),
    )


NOISE_MAX_BLOCK = 1024


def triton_noise(B: int, d: int, n: int) -> LaunchPlan:
    """``_noise_kernel`` (SSN / uniform): a program owns BLOCK elements of one sample."""
    block = min(NOISE_MAX_BLOCK, next_power_of_2(d))
    return LaunchPlan(
        "noise", (B * n, cdiv(d, block), 1), 4 * WARP, 1, work=cdiv(block, 4 * WARP),
        meta=dict(BLOCK=block, num_warps=4),
    )


TOKENS_MAX_BLOCK = 1024
TOKENS_WARPS = 4
MAX_GRID_Y = 65535


def triton_ablate_tokens(samples: int, per_sample: int) -> LaunchPlan:
    """``_ablate_tokens_kernel``: a 2-D grid, programs over tiles of BLOCK consecutive elements of
    one sample's kept-token pixels (x) and over samples (y, capped at the hardware limit: the
    kernel strides over the rest)."""
    block = min(TOKENS_MAX_BLOCK, next_power_of_2(per_sample))
    grid_y = min(samples, MAX_GRID_Y)
    return LaunchPlan(
        "ablate_tokens", (cdiv(per_sample, block), grid_y, 1), TOKENS_WARPS * WARP, 1,
        work=cdiv(block, TOKENS_WARPS * WARP) * cdiv(samples, max(1, grid_y)),
        meta=dict(BLOCK=block, num_warps=TOKENS_WARPS),
    )


def triton_mask_pairs(rows: int, per_row: int) -> LaunchPlan:
    """``_mask_pairs_kernel``: the grid of ``triton_ablate_tokens``, x over tiles of BLOCK
    consecutive outputs of one row (C * H * W), y over rows (mask pairs x images)."""
    plan = triton_ablate_tokens(rows, per_row)
    return dataclasses.replace(plan, kernel="mask_pairs")
