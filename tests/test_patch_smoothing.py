"""Patch smoothers: counts against a loop over positions with the reference op, counts and
certificates against a direct transcription of semantics.md §1 on MNIST / CIFAR shapes, and
soundness (no m x m patch moves a class count by more than Delta, nor a certified prediction)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from conftest import device_of
from fastsmooth import ops
from fastsmooth.certificates import certify_counts
from fastsmooth.smoothing import (
    BlockSmoothing,
    ColumnSmoothing,
    MultiBandSmoothing,
    MultiBlockSmoothing,
    RandomizedBandSmoothing,
    RowSmoothing,
)


def tiny_net(channels: int, num_classes: int, seed: int, scale: float = 8.0, bias: float = 0.0) -> nn.Module:
    """A small random convolutional network for any image size (2C encoded input channels).

    ``scale`` sharpens the softmax so threshold votes vary; ``bias`` favours class 0.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2 * channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(54, num_classes),
    )
    with torch.no_grad():
        net[-1].weight.mul_(scale)
        net[-1].bias.mul_(scale)
        net[-1].bias[0] += bias
    return net.eval()


# -- a direct transcription of semantics.md §1 ----------------------------------------------


def spec_masks(kind: str, H: int, W: int, s: int, keep: int = 0) -> list[torch.Tensor]:
    """The retained pixels of every ablation, in the spec's order, written out literally."""
    masks = []
    if kind == "column":
        for p in range(W):
            m = torch.zeros(H, W, dtype=torch.bool)
            m[:, [(p + t) % W for t in range(s)]] = True
            masks.append(m)
    elif kind == "row":
        for p in range(H):
            m = torch.zeros(H, W, dtype=torch.bool)
            m[[(p + t) % H for t in range(s)], :] = True
            masks.append(m)
    elif kind == "block":
        for i in range(H):
            for j in range(W):
                m = torch.zeros(H, W, dtype=torch.bool)
                for a in range(s):
                    for b in range(s):
                        m[(i + a) % H, (j + b) % W] = True
                masks.append(m)
    elif kind == "multi_band":
        for combo in itertools.combinations(range(W // s), keep):
            m = torch.zeros(H, W, dtype=torch.bool)
            for t in combo:
                m[:, t * s : t * s + s] = True
            masks.append(m)
    elif kind == "multi_block":
        tw = W // s
        for combo in itertools.combinations(range((H // s) * tw), keep):
            m = torch.zeros(H, W, dtype=torch.bool)
            for t in combo:
                r, c = t // tw, t % tw
                m[r * s : r * s + s, c * s : c * s + s] = True
            masks.append(m)
    return masks


def spec_delta(kind: str, m: int, H: int, W: int, s: int, keep: int = 0) -> int:
    if kind in ("column", "row"):
        return m + s - 1
    if kind == "block":
        return (m + s - 1) ** 2
    a = math.ceil((m - 1) / s) + 1
    n = W // s if kind == "multi_band" else (H // s) * (W // s)
    if kind == "multi_block":
        a = a * a
    return math.comb(n, keep) - (math.comb(n - a, keep) if n - a >= 0 else 0)


def spec_counts(model, x, masks, threshold, num_classes, mean=None, std=None) -> torch.Tensor:
    out = torch.zeros(x.shape[0], num_classes, dtype=torch.int64)
    for b in range(x.shape[0]):
        v = x[b]
        if mean is not None:
            v = (v - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        encoded = torch.cat([v, 1 - v])
        batch = torch.stack([encoded * m for m in masks])
        with torch.no_grad():
            logits = model(batch).float()
        for row in logits:
            if threshold is None:
                out[b, int(row.argmax())] += 1
            else:
                out[b] += (row.softmax(0) >= threshold).long()
    return out


def spec_certificate(row: list[int], kind: str, H: int, W: int, s: int, keep: int = 0) -> tuple[int, int]:
    order = sorted(range(len(row)), key=lambda k: -row[k])  # stable descending
    c, r = order[0], order[1]
    gap, largest = row[c] - row[r], 0
    for m in range(1, min(H, W) + 1):
        d = spec_delta(kind, m, H, W, s, keep)
        if gap > 2 * d or (gap == 2 * d and c < r):
            largest = m
    return c, largest


def make(kind, model, num_classes, s, keep=0, threshold=None, **kwargs):
    if kind == "column":
        return ColumnSmoothing(model, num_classes, s, threshold, **kwargs)
    if kind == "row":
        return RowSmoothing(model, num_classes, s, threshold, **kwargs)
    if kind == "block":
        return BlockSmoothing(model, num_classes, s, threshold, **kwargs)
    if kind == "multi_band":
        return MultiBandSmoothing(model, num_classes, s, keep, threshold, **kwargs)
    return MultiBlockSmoothing(model, num_classes, s, keep, threshold, **kwargs)


CASES = [  # kind, shape (C, H, W), s, keep, threshold, normalized
    ("column", (1, 28, 28), 4, 0, 0.3, False),
    ("column", (3, 32, 32), 4, 0, 0.2, True),
    ("row", (1, 28, 28), 5, 0, None, False),
    ("block", (1, 28, 28), 6, 0, 0.3, False),
    ("block", (3, 32, 32), 8, 0, None, True),
    ("multi_band", (1, 28, 28), 4, 2, 0.3, False),
    ("multi_block", (1, 28, 28), 7, 2, None, False),
    ("multi_block", (3, 32, 32), 8, 3, 0.2, False),
]


@pytest.mark.parametrize("kind, shape, s, keep, threshold, normalized", CASES)
def test_counts_and_certificates_match_spec_transcription(kind, shape, s, keep, threshold, normalized):
    C, H, W = shape
    model = tiny_net(C, 10, seed=len(kind) + H, scale=4.0, bias=3.0)
    x = torch.rand(2, C, H, W, generator=torch.Generator().manual_seed(H + s))
    stats = dict(mean=[0.4, 0.5, 0.6][:C], std=[0.2, 0.25, 0.3][:C]) if normalized else {}
    smoother = make(kind, model, 10, s, keep, threshold, batch_size=300, **stats)
    expected = spec_counts(model, x, spec_masks(kind, H, W, s, keep), threshold, 10, **stats)
    assert torch.equal(smoother.counts(x), expected)
    result = smoother.evaluate_batch(x)
    for b in range(x.shape[0]):
        c, m = spec_certificate(expected[b].tolist(), kind, H, W, s, keep)
        assert result.prediction[b].item() == c
        assert result.certificate[b].item() == m
    assert result.certificate.dtype == torch.float64
    assert torch.equal(smoother.certified_patch_size(x), result.certificate.long())
    for m in (1, 2, 5):
        prediction, certified = smoother.certify(x, m)
        assert prediction.tolist() == result.prediction.tolist()
        assert certified.tolist() == (result.certificate >= m).tolist()


def test_transposed_row_smoothing_is_columns_of_the_transpose():
    model = tiny_net(1, 10, seed=3, bias=2.0)
    x = torch.rand(3, 1, 28, 20)
    rows = RowSmoothing(model, 10, 4, 0.3, transposed=True, batch_size=50)
    xt = x.transpose(2, 3)
    expected = spec_counts(model, xt, spec_masks("column", 20, 28, 4), 0.3, 10)
    assert torch.equal(rows.counts(x), expected)
    assert torch.equal(rows.evaluate_batch(x).certificate, ColumnSmoothing(model, 10, 4, 0.3).evaluate_batch(xt).certificate)


# -- the fused, chunked engine equals a loop over positions with the reference op ------------


def loop_counts(kind, model, x, s, keep, threshold, num_classes):
    H, W = x.shape[2:]
    if kind == "column":
        calls = [lambda p=p: ops.ablate_bands(x, s, positions=[p], backend="reference") for p in range(W)]
    elif kind == "row":
        calls = [lambda p=p: ops.ablate_bands(x, s, positions=[p], axis="row", backend="reference") for p in range(H)]
    elif kind == "block":
        calls = [lambda p=p: ops.ablate_blocks(x, s, positions=[p], backend="reference") for p in range(H * W)]
    elif kind == "multi_band":
        combos = ops.band_combinations(W // s, keep)
        calls = [lambda c=c: ops.ablate_multi_bands(x, s, keep, combinations=c[None], backend="reference") for c in combos]
    else:
        combos = ops.block_combinations((H // s) * (W // s), keep)
        calls = [lambda c=c: ops.ablate_multi_blocks(x, s, keep, combinations=c[None], backend="reference") for c in combos]
    out = torch.zeros(x.shape[0], num_classes, dtype=torch.int64, device=x.device)
    for call in calls:
        with torch.no_grad():
            logits = model(call())
        if threshold is None:
            out[torch.arange(x.shape[0], device=x.device), logits.argmax(1)] += 1
        else:
            out += (logits.softmax(1) >= threshold).long()
    return out


SMALL = [("column", 3, 0), ("row", 2, 0), ("block", 3, 0), ("multi_band", 2, 2), ("multi_block", 2, 2)]


@pytest.mark.parametrize("kind, s, keep", SMALL)
@pytest.mark.parametrize("batch_size", [4, 20])  # 4: one image's ablations in chunks; 20: several images per chunk
def test_counts_equal_loop_over_positions(kernel_backend, kind, s, keep, batch_size):
    if kernel_backend == "triton" and batch_size == 4:
        pytest.skip("the chunking is backend independent; keep the Triton interpreter run short")
    device = device_of(kernel_backend)
    model = tiny_net(2, 5, seed=1).to(device)
    x = torch.rand(3, 2, 7, 9, generator=torch.Generator().manual_seed(0))
    seen = []
    recorder = nn.Sequential(model)
    recorder.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[0]))
    for threshold in (None, 0.25):
        smoother = make(kind, recorder, 5, s, keep, threshold, batch_size=batch_size, backend=kernel_backend)
        assert torch.equal(smoother.counts(x), loop_counts(kind, model, x.to(device), s, keep, threshold, 5).cpu())
    assert max(seen) <= batch_size  # memory stays bounded by batch_size


@pytest.mark.parametrize("held", [1, 23, 1 << 22])  # logits held before counting: every chunk, mid-image, never
@pytest.mark.parametrize("batch_size", [4, 20])
def test_counts_do_not_depend_on_when_votes_are_counted(monkeypatch, held, batch_size):
    import fastsmooth.engine.tally as tally_module

    monkeypatch.setattr(tally_module, "PENDING_LOGITS", held)
    model = tiny_net(2, 5, seed=int(torch.randint(1 << 30, ())))
    x = torch.rand(3, 2, 7, 9)
    for kind, s, keep in SMALL:
        for threshold in (None, 0.25):
            smoother = make(kind, model, 5, s, keep, threshold, batch_size=batch_size)
            assert torch.equal(smoother.counts(x), loop_counts(kind, model, x, s, keep, threshold, 5)), (kind, threshold)


@pytest.mark.parametrize("forwards_per_write", [1, 2, 3, 1000])  # 1000: every forward in one kernel call
@pytest.mark.parametrize("batch_size", [4, 20])
def test_writing_several_forwards_per_kernel_call_changes_neither_counts_nor_batches(
    monkeypatch, forwards_per_write, batch_size
):
    import fastsmooth.smoothing.patch as patch_module

    x = torch.rand(3, 2, 7, 9)
    monkeypatch.setattr(patch_module, "_WRITE_BYTES", forwards_per_write * batch_size * 2 * x[0].numel() * 4)
    calls = []
    resolve = patch_module.ablation_kernel

    def counting_kernel(backend, device):
        kernel = resolve(backend, device)
        return lambda *args, **kwargs: (calls.append(1), kernel(*args, **kwargs))[1]

    monkeypatch.setattr(patch_module, "ablation_kernel", counting_kernel)
    model = tiny_net(2, 5, seed=int(torch.randint(1 << 30, ())))
    seen = []
    recorder = nn.Sequential(model)
    recorder.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[0]))
    for kind, s, keep in SMALL:
        smoother = make(kind, recorder, 5, s, keep, 0.25, batch_size=batch_size, memory_format=torch.contiguous_format)
        total = smoother.masks(7, 9, x.device).count
        seen.clear(), calls.clear()
        assert torch.equal(smoother.counts(x), loop_counts(kind, model, x, s, keep, 0.25, 5)), kind
        rows = 3 * total  # every forward is full: ablations of as many images as fit
        want = [min(batch_size, rows - a) for a in range(0, rows, batch_size)]
        assert seen == want, kind  # the forwards the model gets are those of one write per forward
        write = forwards_per_write * batch_size
        assert len(calls) == sum(kernel_calls(a, min(rows, a + write), total) for a in range(0, rows, write)), kind
    band = RandomizedBandSmoothing(recorder, 5, 3, batch_size=batch_size)
    got = band.counts(x, 50, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(patch_module, "_WRITE_BYTES", 1)
    assert torch.equal(got, band.counts(x, 50, generator=torch.Generator().manual_seed(7)))


def kernel_calls(first_row: int, end_row: int, total: int) -> int:
    """Kernel calls of one write of rows first_row .. end_row - 1 (image-major, ``total`` per image):
    one per run of consecutive images with the same ablation range."""
    ranges = [
        (max(first_row, i * total) - i * total, min(end_row, (i + 1) * total) - i * total)
        for i in range(first_row // total, (end_row - 1) // total + 1)
    ]
    return sum(1 for i, r in enumerate(ranges) if i == 0 or r != ranges[i - 1])


class ReusedOutput(nn.Module):
    """Writes every batch's logits into one persistent tensor (as a CUDA-graph replay does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.out = model, None

    def forward(self, x):
        logits = self.model(x)
        if self.out is None or self.out.shape != logits.shape:
            self.out = torch.empty_like(logits)
        return self.out.copy_(logits)


def test_model_returning_one_reused_tensor_is_counted_right():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 5, 4))
    x = torch.rand(2, 1, 6, 5)
    x[1] = 1 - x[0]  # the two images vote differently
    for threshold in (None, 0.3):
        want = loop_counts("column", model, x, 2, 0, threshold, 4)
        assert not torch.equal(want[0], want[1])
        got = ColumnSmoothing(ReusedOutput(model), 4, 2, threshold=threshold, batch_size=5).counts(x)
        assert torch.equal(got, want), threshold


# -- votes ------------------------------------------------------------------------------------


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("value", torch.tensor(logits))

    def forward(self, x):
        return self.value.expand(x.shape[0], -1)


def test_vote_semantics_and_ties():
    x = torch.rand(2, 1, 5, 6)
    top1 = ColumnSmoothing(Constant([0.0, 2.0, 2.0, 1.0]), 4, 2)  # tie between 1 and 2: argmax -> 1
    assert top1.counts(x).tolist() == [[0, 6, 0, 0]] * 2
    uniform = ColumnSmoothing(Constant([0.0, 0.0, 0.0, 0.0]), 4, 2, threshold=0.25)
    assert uniform.counts(x).tolist() == [[6, 6, 6, 6]] * 2  # several votes per ablation
    prediction, certified = uniform.certify(x, 1)
    assert prediction.tolist() == [0, 0] and certified.tolist() == [False, False]
    none = ColumnSmoothing(Constant([0.0, 0.0, 0.0, 0.0]), 4, 2, threshold=0.3)
    assert none.counts(x).tolist() == [[0, 0, 0, 0]] * 2  # no vote at all
    assert none.predict(x).tolist() == [0, 0]


def test_autocast_changes_only_the_precision_of_the_base_model():
    model = tiny_net(1, 10, seed=0, bias=2.0)
    x = torch.rand(2, 1, 12, 12)
    smoother = BlockSmoothing(model, 10, 4, autocast=torch.bfloat16)
    counts = smoother.counts(x)
    assert counts.sum(1).tolist() == [144, 144]  # still one top-1 vote per ablation
    assert smoother.evaluate_batch(x).prediction.shape == (2,)


def test_single_image_and_input_errors():
    model = tiny_net(1, 10, seed=0)
    x = torch.rand(1, 9, 9)
    assert ColumnSmoothing(model, 10, 3).counts(x).shape == (1, 10)
    with pytest.raises(ValueError, match="threshold"):
        ColumnSmoothing(model, 10, 3, threshold=1.5)
    with pytest.raises(ValueError, match="size"):
        ColumnSmoothing(model, 10, 0)
    with pytest.raises(ValueError, match="size"):
        ColumnSmoothing(model, 10, 10).counts(x)
    with pytest.raises(ValueError, match="keep"):
        MultiBandSmoothing(model, 10, 3, keep=4).counts(x)
    with pytest.raises(ValueError, match="axis"):
        MultiBandSmoothing(model, 10, 3, keep=1, axis="diagonal")
    with pytest.raises(ValueError, match="mean and std"):
        ColumnSmoothing(model, 10, 3, mean=[0.5])
    with pytest.raises(ValueError, match="patch_size"):
        ColumnSmoothing(model, 10, 3).certify(x, 10)


# -- soundness: a patch moves each count by at most Delta and never a certified prediction ----



class Trigger(nn.Module):
    """A base network that votes ``target`` when any retained pixel is bright (> 0.95), else
    ``default``: a patch of ones flips exactly the ablations that meet it, so the Delta bound
    is attained and an off-by-one in a Delta or in the tie rule changes a certified prediction."""

    def __init__(self, channels: int, num_classes: int, default: int, target: int):
        super().__init__()
        self.channels, self.num_classes, self.default, self.target = channels, num_classes, default, target

    def forward(self, x):
        bright = torch.relu(x[:, : self.channels] - 0.95).amax(dim=(1, 2, 3)) * 1000
        logits = torch.zeros(x.shape[0], self.num_classes, device=x.device)
        logits[:, self.default] = 1.0
        logits[:, self.target] += bright
        return logits


@settings(max_examples=16, deadline=None)
@given(
    kind=st.sampled_from(["column", "row", "block", "multi_band", "multi_block"]),
    s=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    bias=st.floats(0.0, 6.0),
    threshold=st.sampled_from([None, 0.2]),
    trigger=st.sampled_from([None, (0, 1), (1, 0)]),
)
# 6 ablations, Delta(1) = 3: gap 6 == 2 Delta with c = 1 > r = 0 must not certify m = 1
@example(kind="multi_band", s=2, seed=0, bias=0.0, threshold=None, trigger=(1, 0))
def test_no_patch_breaks_a_certificate(kind, s, seed, bias, threshold, trigger):
    H, W, C = 7, 9, 1
    keep = 2 if kind.startswith("multi") else 0
    model = tiny_net(C, 4, seed=seed, scale=3.0, bias=bias) if trigger is None else Trigger(C, 4, *trigger)
    smoother = make(kind, model, 4, s, keep, threshold, batch_size=2000)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, C, H, W, generator=gen) * 0.9  # nothing bright: the trigger is off
    base = smoother.counts(x)
    result = smoother.evaluate_batch(x)
    certified = int(result.certificate[0])
    for m in sorted({1, 2, certified, certified + 1} - {0}):
        if m > min(H, W):
            continue
        patched = []
        for i in range(H - m + 1):
            for j in range(W - m + 1):
                for content in (torch.rand(C, m, m, generator=gen), torch.ones(C, m, m)):
                    y = x.clone()
                    y[0, :, i : i + m, j : j + m] = content
                    patched.append(y)
        counts = smoother.counts(torch.cat(patched))
        assert int((counts - base).abs().max()) <= smoother.delta(m, H, W)
        if m <= certified:
            assert (certify_counts(counts, 0)[0] == result.prediction[0]).all()


# -- randomized band smoothing ------------------------------------------------------------------


def test_randomized_band_matches_spec_transcription():
    model = tiny_net(1, 10, seed=5, bias=4.0)
    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(2))
    s, n0, n, alpha = 3, 20, 50, 0.05
    smoother = RandomizedBandSmoothing(model, 10, s, batch_size=16, n0=n0, n=n, alpha=alpha)
    result = smoother.evaluate_batch(x, generator=torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    selection, estimation = torch.randint(10, (2, n0), generator=g), torch.randint(10, (2, n), generator=g)
    masks = spec_masks("column", 12, 10, s)
    for b in range(2):
        picked = spec_counts(model, x[b : b + 1], [masks[int(p)] for p in selection[b]], None, 10)[0]
        counts = spec_counts(model, x[b : b + 1], [masks[int(p)] for p in estimation[b]], None, 10)[0]
        c = sorted(range(10), key=lambda k: -int(picked[k]))[0]
        p_lower = proportion_confint(int(counts[c]), n, alpha=2 * alpha, method="beta")[0]
        largest = max([m for m in range(1, 11) if p_lower > 0.5 + (m + s - 1) / 10], default=0)
        assert result.prediction[b].item() == c
        assert result.certificate[b].item() == largest

    again = smoother.counts(x, n=30, generator=torch.Generator().manual_seed(1))
    positions = torch.randint(10, (2, 30), generator=torch.Generator().manual_seed(1))
    for b in range(2):
        expected = spec_counts(model, x[b : b + 1], [masks[int(p)] for p in positions[b]], None, 10)
        assert torch.equal(again[b : b + 1], expected)
    prediction, certified = smoother.certify(x, 1, generator=torch.Generator().manual_seed(7))
    assert prediction.tolist() == result.prediction.tolist()
    assert certified.tolist() == (result.certificate >= 1).tolist()


def test_reference_backend_and_buffer_reuse():
    model = tiny_net(1, 5, seed=2)
    x = torch.rand(3, 1, 6, 8)
    reference = BlockSmoothing(model, 5, 2, 0.25, batch_size=30, backend="reference")
    expected = loop_counts("block", model, x, 2, 0, 0.25, 5)
    assert torch.equal(reference.counts(x), expected)
    assert torch.equal(reference.counts(x[:1]), expected[:1])  # a smaller call reuses the buffer
    assert torch.equal(reference.counts(x), expected)
