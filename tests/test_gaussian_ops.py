"""The fused Gaussian-noise op: every backend against the reference, the noise's distribution,
reproducibility, chunking, argument errors, and opcheck of the compiled ops."""
import numpy as np
import pytest
import torch
from scipy import stats

from conftest import device_of, require_backend
from fastsmooth.ops import gaussian_noise

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _assert_close_to_reference(out: torch.Tensor, ref: torch.Tensor, sigma: float) -> None:
    # The Philox words and uniforms are bit-identical on every backend, but log / cos / sin of
    # glibc, CUDA, Triton (and torch's vectorized CPU math in the reference) differ by a few
    # ulps, and CUDA may fuse x + sigma * z into one FMA. The normals (|z| < 5.8) therefore
    # agree to ~1e-6 absolute, not bit for bit; a wrong counter or word would be off by O(sigma).
    # Half / bfloat16 outputs may additionally round to the neighbouring value: rtol = 1 ulp.
    rtol = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}.get(out.dtype, 0.0)
    torch.testing.assert_close(out.cpu().double(), ref.cpu().double(), atol=1e-5 * sigma, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_match_reference(kernel_backend, dtype):
    device = device_of(kernel_backend)
    # C * H * W = 105 is not a multiple of 4: the last quad is partial.
    x = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(1)).to(dtype).to(device)
    for start, count in ((0, 12), (5, 4)):
        out = gaussian_noise(x, 0.5, 4, seed=2024, start=start, count=count, backend=kernel_backend)
        ref = gaussian_noise(x.cpu(), 0.5, 4, seed=2024, start=start, count=count, backend="reference")
        assert out.shape == (count, 3, 5, 7) and out.dtype == dtype and out.device == device
        _assert_close_to_reference(out, ref, 0.5)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton", "cuda"])
def test_chunks_compose_and_seeds_reproduce(backend):
    device = device_of(backend) if backend != "reference" else torch.device("cpu")
    if backend != "reference":
        require_backend(backend, device.type)
    x = torch.rand(2, 2, 3, 5, device=device)
    full = gaussian_noise(x, 0.25, 5, seed=7, backend=backend)
    chunks = [gaussian_noise(x, 0.25, 5, seed=7, start=s, count=c, backend=backend) for s, c in ((0, 3), (3, 6), (9, 1))]
    assert torch.equal(torch.cat(chunks), full)
    assert torch.equal(gaussian_noise(x, 0.25, 5, seed=7, backend=backend), full)
    assert not torch.equal(gaussian_noise(x, 0.25, 5, seed=8, backend=backend), full)
    out = torch.empty_like(full)
    assert gaussian_noise(x, 0.25, 5, seed=7, out=out, backend=backend) is out and torch.equal(out, full)


def test_generator_and_global_rng_reproduce():
    x = torch.rand(1, 1, 4, 4)
    a = gaussian_noise(x, 1.0, 3, torch.Generator().manual_seed(5))
    b = gaussian_noise(x, 1.0, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(11)
    c = gaussian_noise(x, 1.0, 3)
    torch.manual_seed(11)
    assert torch.equal(gaussian_noise(x, 1.0, 3), c)
    assert not torch.equal(gaussian_noise(x, 1.0, 3), c)  # the global stream moved on


def test_sigma_zero_gives_copies(kernel_backend):
    x = torch.rand(2, 3, 4, 5, device=device_of(kernel_backend))
    out = gaussian_noise(x, 0.0, 3, seed=1, backend=kernel_backend)
    assert torch.equal(out, x.repeat_interleave(3, dim=0))


def _noise(backend: str, B: int, n: int, shape: tuple[int, int, int], sigma: float, seed: int) -> torch.Tensor:
    x = torch.full((B, *shape), 0.5, device=device_of(backend))
    return (gaussian_noise(x, sigma, n, seed=seed, backend=backend).cpu().double() - 0.5) / sigma


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_noise_moments_and_normality(backend):
    require_backend(backend, device_of(backend).type)
    z = _noise(backend, 2, 64, (3, 16, 16), 0.3, seed=3).flatten().numpy()  # 98304 values
    m = len(z)
    assert abs(z.mean()) < 5 / np.sqrt(m)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / m)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / m)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / m)
    assert stats.kstest(z, "norm").pvalue > 1e-4


def test_noise_independence():
    """No correlation between elements of a Box-Muller pair, of a quad, across quads, copies or
    images; also none between squares (Box-Muller pairs are independent, not just uncorrelated)."""
    z = _noise("cpu", 2, 400, (1, 8, 8), 1.0, seed=9)  # [800, 1, 8, 8]
    flat = z.reshape(2, 400, 64)
    m = 2 * 400 * 16
    bound = 5 / np.sqrt(m)
    quads = flat.reshape(2, 400, 16, 4)
    pairs = [(quads[..., 0], quads[..., 1]), (quads[..., 0], quads[..., 2]), (quads[..., 1], quads[..., 3]),
             (quads[..., :15, 3], quads[..., 1:, 0]),  # across a quad boundary
             (flat[:, :-1], flat[:, 1:]),  # consecutive copies of an image
             (flat[0], flat[1])]  # the same copy of two images
    for a, b in pairs:
        for f in (lambda t: t, lambda t: t**2):
            r = np.corrcoef(f(a).flatten().numpy(), f(b).flatten().numpy())[0, 1]
            assert abs(r) < max(bound, 5 / np.sqrt(a.numel())), r
    # Different seeds are independent streams.
    other = _noise("cpu", 2, 400, (1, 8, 8), 1.0, seed=10).flatten().numpy()
    assert abs(np.corrcoef(z.flatten().numpy(), other)[0, 1]) < 5 / np.sqrt(other.size)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=-0.1), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(n=0), "n must be"),
        (dict(start=13), "start"),
        (dict(start=2, count=11), "count"),
        (dict(seed=-1), "seed"),
        (dict(out=torch.empty(3, 3, 4, 4)), "out must have shape"),
        (dict(backend="gpu"), "backend"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, match):
    args = dict(sigma=0.5, n=6, seed=0)
    args.update(kwargs)
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises((ValueError, TypeError), match=match):
        gaussian_noise(x, args.pop("sigma"), args.pop("n"), **args)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match="x must be 4-D"):
        gaussian_noise(torch.rand(3, 4, 4), 0.5, 2)
    with pytest.raises(TypeError, match="generator"):
        gaussian_noise(torch.rand(1, 3, 4, 4), 0.5, 2, generator=3)


def test_compiled_op_checks_its_arguments():
    require_backend("cpu")
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(RuntimeError, match=r"samples \[start, start \+ count\)"):
        torch.ops.fastsmooth.gaussian_noise(x, 0.5, 3, 1, 4, 3)
    with pytest.raises(RuntimeError, match="sigma"):
        torch.ops.fastsmooth.gaussian_noise(x, -1.0, 3, 1, 0, 3)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_opcheck(device):
    require_backend("cpu" if device == "cpu" else "cuda", device)
    x = torch.rand(2, 3, 4, 5, device=device)
    torch.library.opcheck(torch.ops.fastsmooth.gaussian_noise.default, (x, 0.5, 3, 42, 1, 4))
    out = torch.empty(4, 3, 4, 5, device=device)
    torch.library.opcheck(torch.ops.fastsmooth.gaussian_noise_out.default, (x, 0.5, 3, 42, 1, 4, out))
