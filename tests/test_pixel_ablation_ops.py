"""l0 pixel ablation op: bit-identical backends, exactly `keep` pixels, uniform and independent subsets."""
import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import device_of, require_backend
from fastsmooth.ops import ablate_pixels, ablate_pixels_train

P_MIN = 1e-4  # fixed seeds make these deterministic; a real bias drives p to ~0


def kept_mask(out: torch.Tensor, C: int) -> torch.Tensor:
    """bool [N, H, W]: pixels retained (v + (1 - v) == 1 there, NULL = 0 elsewhere), x without normalization."""
    total = out[:, :C].double() + out[:, C:].double()
    kept = total.ne(0)
    # A pixel is kept or dropped as a whole: all 2C channels agree.
    assert torch.equal(kept.all(1), kept.any(1))
    return kept[:, 0]


def subset_ids(mask: torch.Tensor) -> np.ndarray:
    """Index of each sample's kept subset among itertools.combinations(range(d), keep)."""
    flat = mask.reshape(mask.shape[0], -1).numpy()
    d, keep = flat.shape[1], int(flat[0].sum())
    table = {c: i for i, c in enumerate(itertools.combinations(range(d), keep))}
    return np.array([table[tuple(np.nonzero(row)[0])] for row in flat])


@pytest.mark.parametrize("shape,keep", [((2, 3, 5, 7), 0), ((2, 3, 5, 7), 1), ((2, 3, 5, 7), 17),
                                        ((2, 3, 5, 7), 34), ((2, 3, 5, 7), 35), ((1, 1, 1, 1), 1),
                                        ((1, 2, 33, 40), 100)])
def test_backends_match_reference_bit_for_bit(kernel_backend, shape, keep):
    x = torch.rand(shape, device=device_of(kernel_backend))
    n = 4
    expected = ablate_pixels(x.cpu(), keep, n, seed=1234, backend="reference")
    got = ablate_pixels(x, keep, n, seed=1234, backend=kernel_backend)
    assert torch.equal(got.cpu(), expected)
    assert (kept_mask(expected, shape[1]).sum((1, 2)) == keep).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_normalization_and_shared_match(kernel_backend, dtype):
    x = torch.rand(2, 3, 6, 5).to(dtype).to(device_of(kernel_backend))
    kw = dict(seed=77, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4])
    expected = ablate_pixels(x.cpu(), 9, 3, backend="reference", **kw)
    assert torch.equal(ablate_pixels(x, 9, 3, backend=kernel_backend, **kw).cpu(), expected)
    batch = ablate_pixels_train(x, 9, per="batch", seed=5, backend=kernel_backend)
    assert torch.equal(batch.cpu(), ablate_pixels_train(x.cpu(), 9, per="batch", seed=5, backend="reference"))


def test_out_and_empty(kernel_backend):
    x = torch.rand(2, 1, 4, 4, device=device_of(kernel_backend))
    out = torch.full((6, 2, 4, 4), 7.0, device=x.device)
    ablate_pixels(x, 5, 3, seed=3, out=out, backend=kernel_backend)
    assert torch.equal(out.cpu(), ablate_pixels(x.cpu(), 5, 3, seed=3, backend="reference"))
    assert ablate_pixels(x, 5, 0, seed=3, backend=kernel_backend).shape == (0, 2, 4, 4)


def test_values_are_the_encoding_where_kept():
    x = torch.rand(3, 2, 6, 6)
    out = ablate_pixels(x, 11, 5, seed=8, backend="cpu").view(3, 5, 4, 6, 6)
    mask = kept_mask(out.view(15, 4, 6, 6), 2).view(3, 5, 1, 6, 6)
    encoded = torch.cat([x, 1 - x], 1)[:, None]
    assert torch.equal(out, torch.where(mask, encoded, torch.zeros(())))
    assert (mask.sum((2, 3, 4)) == 11).all()


def test_seed_and_generator_reproducible():
    x = torch.rand(2, 3, 8, 8)
    a = ablate_pixels(x, 10, 4, torch.Generator().manual_seed(0), backend="cpu")
    b = ablate_pixels(x, 10, 4, torch.Generator().manual_seed(0), backend="cpu")
    c = ablate_pixels(x, 10, 4, torch.Generator().manual_seed(1), backend="cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)


# The Triton interpreter runs about 30 programs a second: small n there (still >= 10 per cell).
@pytest.mark.parametrize("backend,n,keeps", [("reference", 3000, (2, 3)), ("cpu", 15000, (2, 3)),
                                             ("triton", 150, (2,)), ("cuda", 15000, (2, 3))])
def test_full_subset_distribution_is_uniform(backend, n, keeps):
    """Every keep-subset equally likely: chi-square over all C(6, 2) = 15 subsets (this is also the
    pair-inclusion chi-square, each sample including exactly one pair) and C(6, 3) = 20 subsets."""
    require_backend(backend, "cuda" if backend == "cuda" else "cpu")
    x = torch.rand(1, 1, 2, 3, device=device_of(backend))
    for keep in keeps:
        count = 15 if keep == 2 else 20
        mask = kept_mask(ablate_pixels(x, keep, n, seed=2024 + keep, backend=backend).cpu(), 1)
        observed = np.bincount(subset_ids(mask), minlength=count)
        assert stats.chisquare(observed).pvalue > P_MIN, observed


@pytest.mark.parametrize("backend,n", [("cpu", 20000), ("triton", 150), ("cuda", 20000)])
def test_pixel_and_pair_inclusion_uniform(backend, n):
    """Per-pixel inclusion counts (chi-square with the without-replacement covariance) and pair
    inclusion counts (each within a Bonferroni 5-sigma band) on a larger image."""
    require_backend(backend, "cuda" if backend == "cuda" else "cpu")
    d, keep = 64, 10
    mask = kept_mask(ablate_pixels(torch.rand(1, 1, 8, 8, device=device_of(backend)), keep, n, seed=99,
                                   backend=backend).cpu(), 1).reshape(n, d).double()
    p = keep / d
    counts = mask.sum(0).numpy()
    statistic = ((counts - n * p) ** 2).sum() / (n * p * (1 - p) * d / (d - 1))
    assert stats.chi2.sf(statistic, d - 1) > P_MIN
    pairs = (mask.T @ mask).numpy()[np.triu_indices(d, 1)]
    q = keep * (keep - 1) / (d * (d - 1))
    z = (pairs - n * q) / np.sqrt(n * q * (1 - q))
    assert np.abs(z).max() < 5.5
    if n >= 10000:  # the pair counts' chi-square, calibrated against 2 x the expected spread
        assert ((pairs - n * q) ** 2 / (n * q)).sum() < 1.3 * len(pairs)


def test_independence_between_samples_and_images():
    """Subsets of image 0 and image 1 (same draw j) and of consecutive draws are independent:
    chi-square contingency over the 6 x 6 subset pairs of d = 4, keep = 2."""
    n = 3600
    mask = kept_mask(ablate_pixels(torch.rand(2, 1, 2, 2), 2, n, seed=11, backend="cpu"), 1)
    ids = subset_ids(mask).reshape(2, n)
    for a, b in ((ids[0], ids[1]), (ids[0, :-1], ids[0, 1:])):
        table = np.zeros((6, 6))
        np.add.at(table, (a, b), 1)
        assert stats.chi2_contingency(table).pvalue > P_MIN


def test_training_variants():
    x = torch.rand(5, 3, 6, 6)
    per_batch = kept_mask(ablate_pixels_train(x, 7, per="batch", seed=4, backend="cpu"), 3)
    assert all(torch.equal(per_batch[0], m) for m in per_batch)
    per_image = kept_mask(ablate_pixels_train(x, 7, per="image", seed=4, backend="cpu"), 3)
    assert (per_image.sum((1, 2)) == 7).all()
    assert not all(torch.equal(per_image[0], m) for m in per_image)
    with pytest.raises(ValueError, match="per"):
        ablate_pixels_train(x, 7, per="pixel")


def test_argument_errors():
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="keep"):
        ablate_pixels(x, 17, 2)
    with pytest.raises(ValueError, match="keep"):
        ablate_pixels(x, -1, 2)
    with pytest.raises(ValueError, match="seed"):
        ablate_pixels(x, 3, 2, seed=-5)
    with pytest.raises(ValueError, match="out"):
        ablate_pixels(x, 3, 2, out=torch.empty(3, 6, 4, 4))
    with pytest.raises(ValueError, match="mean"):
        ablate_pixels(x, 3, 2, mean=[0.5, 0.5, 0.5])


def test_compiled_op_checks_arguments():
    require_backend("cpu")
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(RuntimeError, match="keep must be in"):
        torch.ops.fastsmooth.ablate_pixels(x, 17, 2, 0, False, None, None)
    with pytest.raises(RuntimeError, match="seed must be >= 0"):
        torch.ops.fastsmooth.ablate_pixels(x, 3, 2, -1, False, None, None)


def test_opcheck():
    require_backend("cpu")
    x = torch.rand(2, 3, 5, 4)
    mean, std = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.6, 0.7])
    torch.library.opcheck(torch.ops.fastsmooth.ablate_pixels.default, (x, 6, 3, 42, False, mean, std))
    torch.library.opcheck(torch.ops.fastsmooth.ablate_pixels.default, (x, 6, 3, 42, True, None, None))
    out = torch.empty(6, 6, 5, 4)
    torch.library.opcheck(torch.ops.fastsmooth.ablate_pixels_out.default, (x, 6, 3, 42, False, None, None, out))
