"""fastsmooth as the certification backend of IBM's Adversarial Robustness Toolbox (ART 1.20).

Take the ART estimator as it was built and trained, and certify it on fastsmooth's fused path
with the estimator's own model and hyperparameters. A script changes one call::

    # acc, cert_acc = estimator.eval_and_certify(x, y, size_to_certify=5)
    acc, cert_acc = fastsmooth.integrations.art.eval_and_certify(estimator, x, y, size_to_certify=5)

    # prediction, radius = estimator.certify(x, n=10_000)
    prediction, radius = fastsmooth.integrations.art.certify(estimator, x, n=10_000)

Supported estimators:

- ``PyTorchDeRandomizedSmoothing`` with ``algorithm="levine2020"`` (column, row and block
  ablation of ``ablation_size``, votes ``softmax >= threshold``, or ``output >= threshold``
  when ``logits=False``): the same ablations, the same ``[v, 1 - v]`` encoding of
  ``v = (x - mean) / std`` with the estimator's ``preprocessing=(mean, std)`` (ART's
  ``eval_and_certify`` normalizes before its ablator), so the vote counts equal ART's.
  Preprocessing defences are refused; images must lie in [0, 1] (fastsmooth's input contract).
- ``PyTorchDeRandomizedSmoothing`` with ``algorithm="salman2021"`` on a timm ViT (smoothed
  ViTs, docs/semantics.md §10): :class:`~fastsmooth.smoothing.vit.ViTColumnSmoothing` (row,
  block) on the estimator's own ViT with its ``drop_tokens``, top-1 votes (ART's salman2021
  path takes the argmax; ``threshold`` and ``logits`` play no part), and the estimator's
  ``preprocessing`` applied before ablation (``normalize="before"``: ablated pixels are 0 in
  normalized space), so the vote counts equal ART's. Refused: a salman2021 estimator on a CNN
  (ART's image-plus-ones-channel input) and one whose ``input_shape`` differs from its ViT's
  input size (ART resizes such images; fastsmooth does not).
- ``PyTorchRandomizedSmoothing`` (Gaussian, ``scale`` = sigma, ``sample_size`` = n0, ``alpha``):
  noise N(0, scale^2) added to the raw input (images in [0, 1]), then the estimator's
  preprocessing and model, as ART's ``certify`` does; n0 samples choose the class, n samples
  give the one-sided Clopper-Pearson bound at ``alpha``. The noise comes from fastsmooth's Philox stream
  (``seed=`` makes a call reproducible) instead of NumPy's global generator, so the
  certificates agree with ART's in distribution, not sample for sample.

Where fastsmooth's answer differs from ART's (docs/semantics.md §1):

- Tie rule. ART takes the winner and runner-up from ``torch.kthvalue``, whose index among
  equal counts is unspecified, and certifies the gap ``n_c - n_r == 2 Delta`` when the winner's
  index is below that runner-up's. When several classes share the second-largest count, the
  runner-up must be the *smallest* of them: if the winner's index is above it, a patch that
  moves Delta votes makes the tie, and the tie goes to that smaller class. ART can then
  certify an image whose prediction an adversary can flip; fastsmooth does not.
- Block ablation: ART's ``BlockAblatorPyTorch.certify`` applies the tie-break after it has
  computed ``cert_and_correct``, so images certified by the tie-break are never counted in
  its certified accuracy; fastsmooth counts them (with the sound runner-up above).
- Row ablation of non-square images: ART's ``eval_and_certify`` loops over W band positions
  while the bands run along H; fastsmooth uses the H row bands (the method's definition).

Each difference can only occur on images whose gap equals 2 Delta exactly (the first two) or
on non-square images (the last); everywhere else the returned numbers are ART's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fastsmooth.models.vit import TokenViT
from fastsmooth.smoothing.gaussian import Smooth
from fastsmooth.smoothing.patch import BlockSmoothing, ColumnSmoothing, PatchSmoother, RowSmoothing
from fastsmooth.smoothing.vit import ViTBlockSmoothing, ViTColumnSmoothing, ViTRowSmoothing

__all__ = ["ALGORITHMS", "smoother", "eval_and_certify", "certify"]

_INSTALL = "install it with `pip install adversarial-robustness-toolbox==1.20.*` (or fastsmooth's `art` extra)"


def _art_classes() -> tuple[type, type]:
    """ART's two smoothing estimator classes (imported on first use: ART is optional)."""
    try:
        from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError as error:
        raise ImportError(f"fastsmooth.integrations.art needs the adversarial-robustness-toolbox package: {_INSTALL}") from error
    return PyTorchDeRandomizedSmoothing, PyTorchRandomizedSmoothing


# -- De-randomized smoothing (patch certificates) ------------------------------------------------


class _ProbabilityVotes:
    """ART's ``logits=False``: the model already returns probabilities, and a class gets a vote
    when its output is >= threshold (no softmax)."""

    threshold: float

    def _votes(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits >= self.threshold).long()


class _ColumnOnProbabilities(_ProbabilityVotes, ColumnSmoothing):
    pass


class _RowOnProbabilities(_ProbabilityVotes, RowSmoothing):
    pass


class _BlockOnProbabilities(_ProbabilityVotes, BlockSmoothing):
    pass


# ablation_type -> (smoother on logits, smoother on probabilities)
_ABLATIONS: dict[str, tuple[type[PatchSmoother], type[PatchSmoother]]] = {
    "column": (ColumnSmoothing, _ColumnOnProbabilities),
    "row": (RowSmoothing, _RowOnProbabilities),
    "block": (BlockSmoothing, _BlockOnProbabilities),
}


def _normalization(estimator: Any, channels: int) -> tuple[list[float] | None, list[float] | None]:
    """The estimator's preprocessing as the smoother's per-channel (mean, std), applied before
    the [x, 1 - x] encoding as ART does; (None, None) for ART's default (0, 1).

    ART subtracts, then divides, in float32: the fused kernel computes the same expression.
    Preprocessing defences are refused: the fused path normalizes inside its kernel only.
    """
    from art.preprocessing.standardisation_mean_std.numpy import StandardisationMeanStd
    from art.preprocessing.standardisation_mean_std.pytorch import StandardisationMeanStdPyTorch

    operations = list(estimator.preprocessing_operations)
    standard = operations.pop() if operations and isinstance(
        operations[-1], (StandardisationMeanStd, StandardisationMeanStdPyTorch)) else None
    if operations:
        raise ValueError(
            f"estimator has preprocessing defences ({[type(p).__name__ for p in operations]}), which "
            "fastsmooth's fused ablation does not apply; remove them or certify with estimator.eval_and_certify"
        )
    if standard is None:
        return None, None
    stats = []
    for name in ("mean", "std"):
        value = np.asarray(getattr(standard, name), dtype=np.float32).reshape(-1)
        if value.size not in (1, channels):
            raise ValueError(
                f"estimator preprocessing {name} must be a scalar or one value per channel ({channels}), "
                f"got shape {np.shape(getattr(standard, name))}"
            )
        stats.append([float(v) for v in np.broadcast_to(value, (channels,))])
    mean, std = stats
    if all(m == 0 for m in mean) and all(d == 1 for d in std):
        return None, None  # the identity
    return mean, std


def _levine2020(estimator: Any, batch_size: int, backend: str) -> PatchSmoother:
    """Levine & Feizi's smoother with the estimator's ablation type, size, threshold,
    normalization and model."""
    if estimator.ablation_type not in _ABLATIONS:
        raise ValueError(
            f"estimator.ablation_type must be one of {sorted(_ABLATIONS)}, got {estimator.ablation_type!r}"
        )
    on_logits, on_probabilities = _ABLATIONS[estimator.ablation_type]
    cls = on_logits if estimator.logits else on_probabilities
    # ART stores ablation_size as a 1-tuple on the estimator; its ablator holds the int
    size = int(estimator.ablator.ablation_size)
    mean, std = _normalization(estimator, channels=estimator.input_shape[0] // 2)  # ART doubles levine2020's
    return cls(estimator.model, estimator.nb_classes, size, threshold=float(estimator.threshold), mean=mean,
               std=std, batch_size=batch_size, backend=backend)


#: ablation_type -> the smoothed-ViT smoother of salman2021 estimators
_VIT_ABLATIONS: dict[str, type[PatchSmoother]] = {
    "column": ViTColumnSmoothing,
    "row": ViTRowSmoothing,
    "block": ViTBlockSmoothing,
}


def _salman2021(estimator: Any, batch_size: int, backend: str) -> PatchSmoother:
    """Salman et al.'s smoothed ViT (semantics.md §10) on the estimator's own timm ViT: its
    ablation type and size, its ``drop_tokens``, top-1 votes (ART's salman2021 path takes the
    argmax and ignores ``threshold`` / ``logits``) and its ``preprocessing=(mean, std)``
    applied before ablation, as ART does (``normalize="before"``: ablated pixels 0 in
    normalized space)."""
    if estimator.mode != "ViT":
        raise ValueError(
            f"estimator.algorithm='salman2021' with a {estimator.mode} base model (ART feeds it the image plus a "
            "ones channel) has no fastsmooth smoother; fastsmooth certifies salman2021 estimators built on a timm "
            "ViT, and CNNs through algorithm='levine2020' (the [x, 1 - x] encoding)"
        )
    if estimator.ablation_type not in _VIT_ABLATIONS:
        raise ValueError(
            f"estimator.ablation_type must be one of {sorted(_VIT_ABLATIONS)}, got {estimator.ablation_type!r}"
        )
    vit = estimator.model
    if estimator.to_reshape:
        raise ValueError(
            f"estimator.input_shape={tuple(estimator.input_shape)} differs from its ViT's input size "
            f"{tuple(vit.default_cfg['input_size'])}, so ART resizes every ablated image; fastsmooth does not "
            "resize: build the ViT at the image size (timm's img_size=) or resize the images first"
        )
    model = TokenViT(vit, drop_tokens=bool(vit.to_drop_tokens))  # shares the estimator's weights
    mean, std = _normalization(estimator, channels=estimator.input_shape[0])
    cls = _VIT_ABLATIONS[estimator.ablation_type]
    return cls(model, estimator.nb_classes, int(estimator.ablator.ablation_size), threshold=None, mean=mean,
               std=std, batch_size=batch_size, backend=backend, normalize="before")


#: ``estimator.algorithm`` -> builder of the fastsmooth smoother that certifies it.
ALGORITHMS: dict[str, Callable[[Any, int, str], PatchSmoother]] = {
    "levine2020": _levine2020,
    "salman2021": _salman2021,
}


# -- Gaussian randomized smoothing -----------------------------------------------------------------


class _Preprocessed(nn.Module):
    """The estimator's model behind its own preprocessing, as ART's ``predict`` runs it
    (ART adds the noise to the raw input, before its preprocessing)."""

    def __init__(self, estimator: Any) -> None:
        super().__init__()
        self.model = estimator.model
        self._estimator = estimator  # not a Module: kept out of the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._estimator._apply_preprocessing(x, None, fit=False, no_grad=True)
        return self.model(x)


def _gaussian(estimator: Any, batch_size: int, backend: str) -> Smooth:
    if estimator.preprocessing_operations and not estimator.all_framework_preprocessing:
        raise ValueError(
            "estimator has preprocessing that does not run in PyTorch "
            f"({[type(p).__name__ for p in estimator.preprocessing_operations]}); fastsmooth runs the noised "
            "batches through it on the model's device: use PyTorch preprocessing (e.g. preprocessing=(mean, std)) "
            "or estimator.certify"
        )
    if estimator.postprocessing_defences:
        raise ValueError(
            f"estimator has postprocessing defences ({[type(p).__name__ for p in estimator.postprocessing_defences]}), "
            "which fastsmooth does not apply to the base model's outputs; remove them or use estimator.certify"
        )
    return Smooth(_Preprocessed(estimator), estimator.nb_classes, float(estimator.scale), batch_size=batch_size,
                  backend=backend, n0=int(estimator.sample_size), alpha=float(estimator.alpha))


# -- public API -------------------------------------------------------------------------------------


def smoother(estimator: Any, batch_size: int = 128, backend: str = "auto") -> PatchSmoother | Smooth:
    """The fastsmooth smoother that certifies what ``estimator`` certifies.

    ``PyTorchDeRandomizedSmoothing`` gives a :class:`ColumnSmoothing`, :class:`RowSmoothing`
    or :class:`BlockSmoothing` on ``estimator.model`` (levine2020), or their smoothed-ViT
    variants on a :class:`~fastsmooth.models.vit.TokenViT` around the estimator's ViT
    (salman2021), whose ``mean`` / ``std`` are the estimator's preprocessing (it takes the raw
    images, as the estimator does);
    ``PyTorchRandomizedSmoothing`` gives a :class:`Smooth` whose base classifier applies the
    estimator's preprocessing, with n0 = ``sample_size`` and ``alpha`` as its defaults.
    ``batch_size``: the most inputs of the base model per forward pass (ART's meaning too).
    Use it for what ART does not offer: per-image counts, largest certified patch sizes,
    ``fastsmooth.evaluate`` on a data set.
    """
    derandomized, randomized = _art_classes()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(estimator, derandomized):
        build = ALGORITHMS.get(estimator.algorithm)
        if build is None:
            raise ValueError(f"estimator.algorithm must be one of {sorted(ALGORITHMS)}, got {estimator.algorithm!r}")
        return build(estimator, batch_size, backend)
    if isinstance(estimator, randomized):
        return _gaussian(estimator, batch_size, backend)
    raise TypeError(
        "estimator must be an ART PyTorchDeRandomizedSmoothing or PyTorchRandomizedSmoothing, "
        f"got {type(estimator).__name__}"
    )


def eval_and_certify(
    estimator: Any,
    x: np.ndarray,
    y: np.ndarray,
    size_to_certify: int,
    batch_size: int = 128,
    verbose: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``estimator.eval_and_certify(x, y, size_to_certify, batch_size, verbose)`` on fastsmooth.

    x: images [N, C, H, W] (NumPy, as ART takes them); y: labels, indices or one-hot.
    Returns (clean accuracy, certified accuracy against ``size_to_certify`` x
    ``size_to_certify`` patches) as float32 scalar tensors on the estimator's device, like
    ART. The prediction is the argmax of the counts (smallest index on ties), the certificate
    the sound one of the module docstring: on images whose gap is exactly 2 Delta, and for
    block ablation, the certified accuracy can differ from ART's (see there).
    """
    from art.utils import check_and_transform_label_format

    derandomized, _ = _art_classes()
    if not isinstance(estimator, derandomized):
        raise TypeError(f"estimator must be an ART PyTorchDeRandomizedSmoothing, got {type(estimator).__name__}")
    smooth = smoother(estimator, batch_size, backend)
    labels = np.asarray(estimator.reduce_labels(check_and_transform_label_format(y, nb_classes=estimator.nb_classes)))
    correct = certified = 0
    images = len(x)
    if images == 0 or len(labels) != images:
        raise ValueError(f"x and y must hold the same positive number of images, got {images} and {len(labels)}")
    for start in tqdm(range(0, images, batch_size), disable=not verbose, desc="certify", unit="batch"):
        # raw images: the smoother normalizes them with the estimator's preprocessing, in its kernel
        batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(estimator.device)
        prediction, cert = smooth.certify(batch, size_to_certify)
        right = prediction.numpy() == labels[start : start + batch_size]
        correct += int(right.sum())
        certified += int((right & cert.numpy()).sum())
    device = estimator.device
    return (torch.tensor(float(correct), device=device) / images, torch.tensor(float(certified), device=device) / images)


def certify(
    estimator: Any,
    x: np.ndarray,
    n: int,
    batch_size: int = 32,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    verbose: bool = False,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """``estimator.certify(x, n, batch_size)`` of a ``PyTorchRandomizedSmoothing`` on fastsmooth.

    For every image of x [N, C, H, W]: ``estimator.sample_size`` noised samples choose the
    class, ``n`` samples bound its probability (one-sided Clopper-Pearson at
    ``estimator.alpha``). Returns (prediction int64 [N], l2 radius float64 [N]) as NumPy
    arrays, like ART: prediction -1 and radius 0.0 where it abstains (p_lower < 1/2), else
    radius ``scale * Phi^-1(p_lower)``. ``batch_size``: samples per forward pass. Samples of
    consecutive images share forward passes. ``seed`` / ``generator`` make the noise
    reproducible (default: torch's global generator).
    """
    _, randomized = _art_classes()
    if not isinstance(estimator, randomized):
        raise TypeError(f"estimator must be an ART PyTorchRandomizedSmoothing, got {type(estimator).__name__}")
    smooth = smoother(estimator, batch_size, backend)
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(estimator.device)
    if images.dim() != 4:
        raise ValueError(f"x must be images [N, C, H, W], got shape {tuple(x.shape)}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    predictions, radii = [np.zeros(0, np.int64)], [np.zeros(0, np.float64)]  # (no images: empty arrays)
    per_call = max(1, 16 * batch_size // max(1, n))  # images per call: progress without starving the batches
    for start in tqdm(range(0, len(images), per_call), disable=not verbose, desc="certify", unit="call"):
        result = smooth.certify_batch(images[start : start + per_call], smooth.n0, n, smooth.alpha, batch_size,
                                      generator=generator)
        predictions.append(result.prediction.numpy())
        radii.append(result.certificate.numpy())
    return np.concatenate(predictions).astype(np.int64), np.concatenate(radii).astype(np.float64)
