"""The Philox stream is the same on every backend: NumPy reference, Triton's tl.philox and the
C++ / CUDA header (csrc/ops/common/philox.h, checked through the Gaussian op)."""
import numpy as np
import pytest
import torch

from conftest import device_of, require_backend
from fastsmooth.ops import gaussian_noise
from fastsmooth.ops._philox import philox4x32
from fastsmooth.ops.gaussian.reference import STREAM

# Known-answer vectors of Philox4x32-10 from Random123 (kat_vectors): (counter, key) -> words.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_numpy_reference_matches_random123(counter, key, expected):
    seed = key[0] | (key[1] << 32)  # key = (low word, high word) of the seed, as in tl.philox
    words = philox4x32(seed, *[np.array([c], dtype=np.uint64) for c in counter])
    assert tuple(int(w[0]) for w in words) == expected


def test_triton_philox_matches_numpy_reference():
    require_backend("triton", device_of("triton").type)
    import triton
    import triton.language as tl

    @triton.jit
    def words_kernel(c_ptr, out_ptr, seed, N: tl.constexpr):
        i = tl.arange(0, N)
        c0 = tl.load(c_ptr + 4 * i + 0)
        c1 = tl.load(c_ptr + 4 * i + 1)
        c2 = tl.load(c_ptr + 4 * i + 2)
        c3 = tl.load(c_ptr + 4 * i + 3)
        w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3)
        tl.store(out_ptr + 4 * i + 0, w0)
        tl.store(out_ptr + 4 * i + 1, w1)
        tl.store(out_ptr + 4 * i + 2, w2)
        tl.store(out_ptr + 4 * i + 3, w3)

    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(64, 4), dtype=np.uint64)
    counters[0] = 0
    counters[1] = 2**32 - 1
    device = device_of("triton")
    for seed in (0, 1, 0x123456789ABCDEF, 2**63 - 1):
        c = torch.from_numpy(counters.astype(np.uint32).view(np.int32)).to(device)
        out = torch.empty(64, 4, dtype=torch.int32, device=device)
        words_kernel[(1,)](c.view(torch.uint32), out.view(torch.uint32), seed, N=64)
        expected = np.stack(philox4x32(seed, *counters.T), axis=1)
        np.testing.assert_array_equal(out.cpu().numpy().view(np.uint32), expected)


def _recovered_words(z: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert Box-Muller on float64 normals: the top 24 bits of the (radius, angle) words.

    z = r (cos t, sin t) with r^2 = -2 log u1 and t = 2 pi u2, u1 = (k1 + 1) 2^-24 and
    u2 = k2 2^-24 with k = word >> 8. In float64 both k are recovered exactly by rounding.
    """
    even, odd = z[..., 0::2].double(), z[..., 1::2].double()
    u1 = torch.exp(-(even**2 + odd**2) / 2)
    u2 = torch.remainder(torch.atan2(odd, even), 2 * torch.pi) / (2 * torch.pi)
    k1 = torch.round(u1 * 2.0**24).long() - 1
    k2 = torch.remainder(torch.round(u2 * 2.0**24).long(), 2**24)
    usable = k1 < 2**24 - 1  # u1 = 1 gives r = 0: the angle is lost (probability 2^-24)
    return k1.numpy(), k2.numpy(), usable.numpy()


def test_compiled_philox_words_match_reference(kernel_backend):
    """The kernels' words (top 24 bits, recovered from float64 output) equal the NumPy stream."""
    device = device_of(kernel_backend)
    B, n, D, seed = 2, 3, 4 * 20, 987654321
    x = torch.zeros(B, 1, 4, 20, dtype=torch.float64, device=device)
    z = gaussian_noise(x, 1.0, n, seed=seed, backend=kernel_backend).cpu().reshape(B * n, D)
    samples = np.arange(B * n)
    q = np.arange(D // 4)
    w = philox4x32(seed, q[None, :], (samples % n)[:, None], (samples // n)[:, None], STREAM)
    quads = z.reshape(B * n, D // 4, 4)
    for pair, (w_radius, w_angle) in enumerate(((w[0], w[1]), (w[2], w[3]))):
        k1, k2, usable = _recovered_words(quads[..., 2 * pair : 2 * pair + 2])
        k1, k2, usable = k1[..., 0], k2[..., 0], usable[..., 0]
        np.testing.assert_array_equal(k1[usable], (w_radius >> np.uint32(8))[usable])
        np.testing.assert_array_equal(k2[usable], (w_angle >> np.uint32(8))[usable])
