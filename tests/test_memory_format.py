"""The layout smoothers feed the base model (BaseSmoother's ``memory_format``): what "auto"
picks, that the model really receives it, that the counts do not depend on it, and the
fallback for models whose forward rejects channels-last batches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastsmooth
from fastsmooth.smoothing.base import auto_memory_format

CL, NCHW = torch.channels_last, torch.contiguous_format


class Recorder(nn.Module):
    """A small float64 conv net that records whether each input batch was channels-last."""

    def __init__(self, in_channels: int, seed: int, flatten_with_view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, 5, 3, padding=1).double()
        self.head = nn.Linear(5 * 16, 10).double()
        self.flatten_with_view = flatten_with_view
        self.layouts: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append("cl" if not x.is_contiguous() else "nchw")
        h = nn.functional.adaptive_avg_pool2d(self.conv(x).relu(), 4)
        # .view of a channels-last activation fails: the authors' older models flatten this way
        h = h.view(len(h), -1) if self.flatten_with_view else h.flatten(1)
        return self.head(h) * 20


def _images(B: int, C: int = 3, H: int = 7, W: int = 6) -> torch.Tensor:
    return torch.rand(B, C, H, W, dtype=torch.float64)


def test_auto_is_channels_last_for_conv_models_on_cpu():
    model = Recorder(6, seed=0)
    assert auto_memory_format(model, torch.device("cpu"), (6, 7, 6), torch.float64) == CL
    assert auto_memory_format(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.device("cpu"), (1, 2, 2), torch.float32) == NCHW
    assert auto_memory_format(lambda x: x, torch.device("cpu"), (1, 2, 2), torch.float32) == NCHW


@pytest.mark.parametrize(
    "make",
    [
        lambda m, f: fastsmooth.ColumnSmoothing(m, 10, 2, threshold=0.2, batch_size=8, memory_format=f),
        lambda m, f: fastsmooth.BlockSmoothing(m, 10, 3, batch_size=100, memory_format=f),
        lambda m, f: fastsmooth.RowSmoothing(m, 10, 2, batch_size=5, memory_format=f),
    ],
    ids=["column", "block", "row"],
)
def test_patch_smoother_counts_do_not_depend_on_layout(make):
    x = _images(3)
    seed = int(torch.randint(1 << 30, ()))
    counts = {}
    for fmt in ("auto", CL, NCHW):
        model = Recorder(6, seed)
        counts[fmt] = make(model, fmt).counts(x)
        layouts = set(model.layouts[1:] if fmt == "auto" else model.layouts)  # "auto" probes once first
        assert layouts == {"nchw" if fmt is NCHW else "cl"}, fmt
    assert counts[NCHW].sum() > 0
    assert torch.equal(counts["auto"], counts[NCHW]) and torch.equal(counts[CL], counts[NCHW])


def test_other_smoothers_feed_the_chosen_layout():
    x = _images(1)
    for fmt, want in ((CL, "cl"), (NCHW, "nchw")):
        model = Recorder(3, seed=1)
        smooth = fastsmooth.Smooth(model, 10, 0.25, memory_format=fmt)
        smooth.predict(x[0], n=50, alpha=0.001, batch_size=20, seed=0)
        assert set(model.layouts) == {want}
        model = Recorder(6, seed=1)
        fastsmooth.RandomizedAblation(model, 10, keep=5, batch_size=30, memory_format=fmt).predict(x, n=40)
        assert set(model.layouts) == {want}


def test_auto_falls_back_for_a_model_that_rejects_channels_last():
    x = _images(2)
    model = Recorder(6, seed=2, flatten_with_view=True)
    with pytest.raises(RuntimeError, match="view"):
        fastsmooth.ColumnSmoothing(model, 10, 2, memory_format=CL).counts(x)
    model.layouts.clear()
    counts = fastsmooth.ColumnSmoothing(model, 10, 2, threshold=0.2).counts(x)
    assert model.layouts[0] == "cl" and set(model.layouts[1:]) == {"nchw"}  # the probe, then NCHW
    assert torch.equal(counts, fastsmooth.ColumnSmoothing(model, 10, 2, threshold=0.2, memory_format=NCHW).counts(x))


def test_auto_probe_does_not_train_batch_norm():
    model = nn.Sequential(nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    model(torch.rand(2, 6, 7, 6))  # materialize the lazy layer (and leave the model training)
    stats = model[1].running_mean.clone()
    fastsmooth.ColumnSmoothing(model, 10, 2).counts(torch.rand(1, 3, 7, 6))
    assert torch.equal(model[1].running_mean, stats)


@pytest.mark.parametrize("bad", ["channels_last", torch.preserve_format, 3])
def test_bad_memory_format_is_named(bad):
    with pytest.raises(ValueError, match=r"memory_format must be 'auto', torch.contiguous_format or torch.channels_last"):
        fastsmooth.ColumnSmoothing(Recorder(6, 0), 10, 2, memory_format=bad)
