"""PatchCleanser on the demo digits: fastsmooth against a loop in the authors' style, and against
the forward floor, on the same trained CNN and held-out digits, interleaved round by round.

Roles:
1. ``fastsmooth``: ``PatchCleanser.evaluate_batch`` (double-masking prediction and
   certification, exact early exit, each distinct masked input of an image run once, pairs of
   many images per forward, the fused ``mask_pairs`` op writing one reused buffer);
   ``every pair``: the same with ``dedupe=False`` (pairs that repeat an input run again), the
   split between early exit and repeated inputs;
2. ``authors loop``: pc_certification.py as the authors wrote it (tests/patchcleanser_authors.py):
   one model call per mask pair i <= j on the batch of images, full-size boolean masks and
   ``torch.where`` per pair, every pair run, the prediction from the two-mask map, plus the clean
   forward: 667 forwards per image at 28 x 28 / patch 5 / 6 x 6 masks, as the paper's setting;
3. ``floor``: the base model alone on the very inputs fastsmooth ran, in its batches, written
   beforehand (no masking, no bookkeeping): what no engine can go below.

The roles run in lockstep (benchmarks/lockstep.py): within each round they take turns at every
forward of the CNN, and each role's time is the sum of its turns.

The ``certified`` group runs the same roles on certified digits only (every distinct input runs
there, so early exit saves nothing: the ratio to the floor is the engine's own cost). Forwards per image
are in each row's extra_info (``forwards_per_image``; the full enumeration is 666 + 1 clean).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run
from lockstep import Lockstep
from fastsmooth.smoothing.patchcleanser import PatchCleanser

from tests.patchcleanser_authors import authors_certification, gen_mask_set
from tests.patchcleanser_models import digit_cnn, held_out

PATCH, K, BATCH, IMAGES = 5, 6, 256, 32
#: the "all" row's held-out digits (enough that the certified fraction, which sets the forwards
#: per image, is not a handful of digits) and the certified row's digits
ALL, CERTIFIED = 200, 16


def _patchcleanser(model: nn.Module, **options) -> PatchCleanser:
    """PatchCleanser as every role of these rows runs it (NCHW: the floor replays its inputs)."""
    return PatchCleanser(model, 10, PATCH, num_mask=K, batch_size=BATCH, memory_format=torch.contiguous_format,
                         **options)


class _Capture(nn.Module):
    """The model, keeping a copy of every batch it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.model(x)


def _floor(model, x: torch.Tensor):
    """The model alone on the very inputs fastsmooth runs on ``x`` (PatchCleanser as the rows
    configure it), in its batches, written beforehand by one untimed call: only the forwards are
    timed. Its own batches, not full ones: a ResNet-18 on this CPU costs less per row at batch
    64 than at 256 (cache), so full batches would be no floor for a run whose looks leave
    forwards part-full."""
    capture = _Capture(model)
    _patchcleanser(capture).evaluate_batch(x)
    batches = capture.inputs

    def floor():
        with torch.inference_mode():
            for batch in batches:
                model(batch)

    return floor


def _roles(x, y, model):
    pc = _patchcleanser(model)
    plain = _patchcleanser(model, dedupe=False)
    masks, _, _ = gen_mask_set((28, 28), (PATCH, PATCH), num_mask=K)

    def fastsmooth():
        return pc.evaluate_batch(x)

    def every_pair():
        return plain.evaluate_batch(x)

    def authors():
        certified, predicted, _ = authors_certification(model, x, y.numpy(), masks)
        with torch.inference_mode():
            model(x)  # the clean prediction their script also computes
        return certified, predicted

    certified, predicted = authors()
    for role in (every_pair, fastsmooth):  # fastsmooth last: pc.last_units are its forwards
        result = role()
        assert result.prediction.tolist() == predicted.tolist()  # the same answers (tests/test_patchcleanser.py)
        assert ((result.prediction == y) & (result.certificate > 0)).tolist() == certified.tolist()
    roles = {"authors loop": authors, "every pair": every_pair, "floor": _floor(model, x)}
    return pc, plain, fastsmooth, roles, certified


@pytest.mark.parametrize("subset", ["all", "certified"])
def test_patchcleanser_digits(benchmark, subset):
    x, y = held_out(ALL)
    if subset == "certified":  # the certified digits (tests/test_patchcleanser.py checks the answers)
        result = PatchCleanser(digit_cnn(), 10, PATCH, num_mask=K, batch_size=BATCH).evaluate_batch(x)
        keep = ((result.prediction == y) & (result.certificate > 0)).nonzero()[:, 0][:CERTIFIED]
        x, y = x[keep], y[keep]
    # the roles take turns at every forward of the CNN (benchmarks/lockstep.py): this VM's speed
    # switches between states about 2x apart, which interleaving whole calls cannot resolve
    stepper = Lockstep(digit_cnn())
    pc, plain, fastsmooth, roles, certified = _roles(x, y, stepper.model)
    forwards = float(pc.last_units.double().mean())
    M = pc.masks(28, 28).count
    info = dict(images=len(y), forwards_per_image=forwards, full_forwards=M + M * (M - 1) // 2 + 1,
                every_pair_forwards_per_image=float(plain.last_units.double().mean()),
                certified=float(np.mean(certified)), patch=PATCH, num_mask=K, batch=BATCH)
    run(benchmark, fastsmooth, group=f"PatchCleanser digits ({subset})", role="fastsmooth", rounds=7, primary=True,
        interleaved=roles, lockstep=stepper, **info)


def test_patchcleanser_floor_resnet(benchmark):
    """The engine's own cost where a forward row costs what a real model's does: a CIFAR
    ResNet-18 (random weights, seeded: speed does not depend on them) on 2 random 32 x 32 images
    that it certifies (every masked prediction the same class), so every one of the 666 pairs
    runs (random pixels never equal the fill: no input repeats), against the floor on the same
    inputs and batches, in lockstep. The digit CNN's rows cost about 21 us each on this CPU, a ResNet-18's
    about 8 ms: the engine's cost per row is the same in both, its share is not."""
    from fastsmooth.models.resnet_cifar import cifar_resnet18

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cifar_resnet18(in_channels=3, num_classes=10).eval()
        x = torch.rand(2, 3, 32, 32)
    stepper = Lockstep(model)
    pc = _patchcleanser(stepper.model)
    result = pc.evaluate_batch(x)
    M = pc.masks(32, 32).count
    assert (result.certificate > 0).all() and pc.last_units.tolist() == [M * (M + 1) // 2] * len(x)
    floor = _floor(stepper.model, x)
    run(benchmark, lambda: pc.evaluate_batch(x), group="PatchCleanser certified, CIFAR ResNet-18", role="fastsmooth",
        rounds=3, primary=True, interleaved={"floor": floor}, lockstep=stepper, images=len(x),
        forwards_per_image=float(pc.last_units.double().mean()), patch=PATCH, num_mask=K, batch=BATCH)


#: (model, patch, num_mask, mask_stride) of the token-vs-pixel rows: masks on the ViT's grid
VIT_SETTINGS = {
    # the trained digit ViT: 7 x 7 tokens (16), 3 x 3 masks of 14 x 14 (4 tokens; a pair keeps 8 .. 12)
    "digit ViT (16 tokens), patch 8, 3 x 3 masks": ("digit", 8, 3, None),
    # mnist_vit's default size (4 x 4 tokens, 49; width 64, depth 4), weights as built (the cost per
    # forward does not depend on them; forwards per image here are not a trained model's): masks of
    # 8 x 8 (4 tokens) at stride 4, 36 masks (a pair keeps 41 .. 45 tokens)
    "mnist_vit (49 tokens), patch 5, stride 4": ("mnist_vit", 5, None, 4),
}


@pytest.mark.parametrize("setting", list(VIT_SETTINGS))
def test_patchcleanser_vit_tokens_vs_pixels(benchmark, setting):
    """The token path (masked tokens dropped, forwards grouped by kept-token count) against the
    pixel path (tokens=False: every token, masked pixels 0) on the same ViT and digits,
    interleaved. The two paths are different base classifiers, so forwards per image (early
    exit) differ as well as the cost per forward: each role's forwards are in extra_info
    (``*_forwards``), so seconds per forward = median / forwards."""
    from fastsmooth.models.vit import import_timm, mnist_vit

    try:
        import_timm()  # through fastsmooth's torchvision shim, as the tests
    except ImportError as err:
        pytest.skip(f"timm unavailable: {err}")
    from tests.patchcleanser_models import digit_vit

    name, patch, k, stride = VIT_SETTINGS[setting]
    torch.manual_seed(0)
    vit = digit_vit() if name == "digit" else mnist_vit().eval()
    x, y = held_out(IMAGES)
    tokens = PatchCleanser(vit, 10, patch, num_mask=k, mask_stride=stride, batch_size=BATCH)
    pixels = PatchCleanser(vit, 10, patch, num_mask=k, mask_stride=stride, batch_size=BATCH, tokens=False,
                           memory_format=torch.contiguous_format)
    assert tokens.path == "tokens" and pixels.path == "pixels"
    info = {}
    for role, pc in (("tokens", tokens), ("pixels", pixels)):
        pc.evaluate_batch(x)
        info[f"{role}_forwards"] = int(pc.last_units.sum())
    M = tokens.masks(28, 28).count
    run(benchmark, lambda: tokens.evaluate_batch(x), group=f"PatchCleanser ViT tokens vs pixels: {setting}",
        role="tokens", rounds=3, primary=True, interleaved={"pixels": lambda: pixels.evaluate_batch(x)},
        images=len(y), full_forwards=M + M * (M - 1) // 2, batch=BATCH, **info)
