"""No broken model is certified, and empty batches give empty answers (docs/reliability.md).

Every smoother's forwards go through one engine (``fastsmooth.engine.run``), whose tally
refuses NaN / Inf logits: each smoother class is tried here with a model whose logits are all
NaN, NaN in every other row, and +Inf in every other row, through each of its answering methods
(the sequential deciders included), and through the ART adapter.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import fastsmooth
from fastsmooth.engine import NonFiniteLogitsError

K = 4


def _net(channels: int, h: int = 8, w: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * h * w, K))


def _vit():
    from conftest import timm_or_skip

    timm_or_skip()
    from fastsmooth.models.vit import build_vit

    torch.manual_seed(0)
    return build_vit("vit_tiny_patch16_224", num_classes=K, img_size=8, patch_size=4, drop_tokens=True,
                     embed_dim=24, depth=1, num_heads=2, mlp_ratio=1.0).eval()


# name -> (smoother on [B, 3, 8, 8] images, its answering methods on a batch)
SMOOTHERS = {
    "column": lambda: fastsmooth.ColumnSmoothing(_net(6), K, size=2),
    "row": lambda: fastsmooth.RowSmoothing(_net(6), K, size=2, threshold=0.3),
    "block": lambda: fastsmooth.BlockSmoothing(_net(6), K, size=2),
    "multi-band": lambda: fastsmooth.MultiBandSmoothing(_net(6), K, size=2, keep=2),
    "multi-block": lambda: fastsmooth.MultiBlockSmoothing(_net(6), K, size=2, keep=2),
    "randomized-band": lambda: fastsmooth.RandomizedBandSmoothing(_net(6), K, size=2, n0=5, n=20),
    "l0": lambda: fastsmooth.RandomizedAblation(_net(6), K, keep=5, n0=5, n=20),
    "dssn": lambda: fastsmooth.DSSN(_net(3), K, sigma=0.1),
    "ssn": lambda: fastsmooth.SSN(_net(3), K, sigma=0.25, n0=5, n=20),
    "uniform": lambda: fastsmooth.UniformSmoothing(_net(3), K, sigma=0.25, n0=5, n=20),
    "gaussian": lambda: fastsmooth.Smooth(_net(3), K, 0.25, n0=5, n=20),
    "vit-column": lambda: fastsmooth.ViTColumnSmoothing(_vit(), K, 2, batch_size=8),
    "vit-row": lambda: fastsmooth.ViTRowSmoothing(_vit(), K, 2, batch_size=8),
    "vit-block": lambda: fastsmooth.ViTBlockSmoothing(_vit(), K, 2, batch_size=8),
    "vit-multi-band": lambda: fastsmooth.ViTMultiBandSmoothing(_vit(), K, 2, 2, batch_size=8),
    "vit-multi-block": lambda: fastsmooth.ViTMultiBlockSmoothing(_vit(), K, 2, 2, batch_size=8),
}
SAMPLED = {"randomized-band", "l0", "ssn", "uniform", "gaussian"}
RADIUS = {"l0", "dssn", "ssn", "uniform", "gaussian"}


def _methods(name: str, s) -> dict:
    """Every method of ``s`` that answers on a batch (predictions, certificates, counts)."""
    levels = [0.5, 1.0] if name in RADIUS else [1, 2]
    calls = {"evaluate_batch": lambda x: s.evaluate_batch(x), "decide_batch": lambda x: s.decide_batch(x, levels)}
    if name in ("l0", "ssn", "uniform", "randomized-band"):
        calls["counts"] = lambda x: s.counts(x, 10)
    elif name == "gaussian":
        calls["counts"] = lambda x: s.sample_counts(x, 10)
        calls["certify_batch"] = lambda x: s.certify_batch(x, 5, 20, 0.01)
        calls["predict_batch"] = lambda x: s.predict_batch(x, 20, 0.01)
        calls["predict_batch_sequential"] = lambda x: s.predict_batch(x, 20, 0.01, sequential=True)
    else:
        calls["counts"] = lambda x: s.counts(x)
    if name == "l0":
        calls["predict"] = lambda x: s.predict(x, 20)
        calls["predict_sequential"] = lambda x: s.predict(x, 20, sequential=True)
        calls["certify"] = lambda x: s.certify(x, 5, 20)
    elif name in ("dssn", "ssn", "uniform"):
        calls["certify"] = lambda x: s.certify(x)
        if name == "dssn":
            calls["predict"] = lambda x: s.predict(x)
    elif name != "gaussian":
        calls["predict"] = lambda x: s.predict(x)
        calls["certify"] = lambda x: s.certify(x, 1)
    return calls


def _poison(model: nn.Module, mode: str) -> None:
    """Make ``model``'s logits non-finite: "all" NaN, "half" (every other row NaN) or "inf"
    (every other row +Inf in class 1)."""

    def hook(module, inputs, out):
        out = out.clone()
        if mode == "all":
            out[:] = math.nan
        elif mode == "half":
            out[::2] = math.nan
        else:
            out[::2, 1] = math.inf
        return out

    # a ViT's token forward bypasses the wrapper's __call__: poison its head instead
    target = model.vit.head if hasattr(model, "vit") else model
    target.register_forward_hook(hook)


def _cases():
    for name in SMOOTHERS:
        for method in _methods(name, None):
            yield name, method


@pytest.mark.parametrize(("name", "method"), list(_cases()))
@pytest.mark.parametrize("mode", ["all", "half", "inf"])
def test_non_finite_logits_are_refused(name, method, mode):
    """All-NaN logits were certified (column top-1 size 1, Smooth radius 0.456, l0 radius 11,
    DSSN 0.863) and half-NaN rows voted for class 0: every smoother and method now refuses."""
    smoother = SMOOTHERS[name]()
    _poison(smoother.model, mode)
    x = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 255  # (DSSN: on its grid)
    with pytest.raises(NonFiniteLogitsError, match=r"non-finite logits \(NaN or Inf\) for \d+ of the \d+ rows") as err:
        _methods(name, smoother)[method](x)
    assert 0 < err.value.bad <= err.value.rows
    if mode == "all":
        assert err.value.bad == err.value.rows
    else:
        assert err.value.bad < err.value.rows


@pytest.mark.parametrize(("name", "method"), list(_cases()))
def test_empty_batch_gives_empty_answers(name, method):
    """ColumnSmoothing(...).certify(empty) raised AttributeError, as did predict / decide_batch of
    every deterministic patch smoother: empty in, empty out, of the shapes and dtypes of a batch."""
    smoother = SMOOTHERS[name]()
    empty, one = torch.rand(0, 3, 8, 8), torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 255
    call = _methods(name, smoother)[method]
    got, want = call(empty), call(one)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == (0, *w.shape[1:]) and g.device == w.device


def test_the_check_costs_no_host_read_per_forward():
    """The tally sums non-finite rows on the device; it is read only where counts are read."""
    from fastsmooth.engine import Everything, run

    forwards = []

    class Work:
        votes = staticmethod(lambda logits: torch.nn.functional.one_hot(logits.argmax(1), K))

        def build(self, segments):
            return torch.zeros(sum(s.rows for s in segments), K)

        def forward(self, inputs, start, stop):
            forwards.append(stop - start)
            out = inputs[start:stop].clone()
            out[0, 0] = math.nan if len(forwards) == 3 else 0.0  # one bad row, in the third forward
            return out

    with pytest.raises(NonFiniteLogitsError, match="for 1 of the 40 rows"):
        run(Work(), Everything(10), [(b, b) for b in range(4)], K, torch.device("cpu"), 4)
    assert len(forwards) == 10  # every forward ran: the check waited for the counts


def _art_derandomized(model: nn.Module):
    from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing

    return PyTorchDeRandomizedSmoothing(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=K, ablation_size=2,
        algorithm="levine2020", ablation_type="column", threshold=0.2, logits=True, device_type="cpu", verbose=False,
    )


@pytest.mark.parametrize("mode", ["all", "half", "inf"])
def test_art_adapter_refuses_non_finite_logits(mode):
    pytest.importorskip("art")
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    from fastsmooth.integrations import art as fs_art

    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    model = _net(2)
    _poison(model, mode)
    with pytest.raises(NonFiniteLogitsError):
        fs_art.eval_and_certify(_art_derandomized(model), x, np.zeros(3, dtype=np.int64), 1, verbose=False)
    model = _net(1)
    _poison(model, mode)
    gaussian = PyTorchRandomizedSmoothing(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                          nb_classes=K, device_type="cpu", sample_size=5, scale=0.25, alpha=0.01)
    with pytest.raises(NonFiniteLogitsError):
        fs_art.certify(gaussian, x, n=20, seed=0)


def test_art_adapter_on_an_empty_batch():
    """ART's Gaussian certify on no images: empty arrays (eval_and_certify, an accuracy, refuses
    an empty set: the accuracy of no images is undefined)."""
    pytest.importorskip("art")
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    from fastsmooth.integrations import art as fs_art

    gaussian = PyTorchRandomizedSmoothing(model=_net(1), loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                          nb_classes=K, device_type="cpu", sample_size=5, scale=0.25, alpha=0.01)
    prediction, radius = fs_art.certify(gaussian, np.zeros((0, 1, 8, 8), dtype=np.float32), n=20, seed=0)
    assert prediction.shape == (0,) and radius.shape == (0,)
    with pytest.raises(ValueError, match="same positive number of images, got 0 and 0"):
        fs_art.eval_and_certify(_art_derandomized(_net(2)), np.zeros((0, 1, 8, 8), dtype=np.float32),
                                np.zeros(0, dtype=np.int64), 1, verbose=False)
