"""Adaptive certification against fixed budgets, on networks trained on the demo digits.

- Gaussian smoothing (sigma 0.25 / 0.5; network trained with that noise, cached): fixed
  n = 10,000 (100,000 with FASTSMOOTH_BENCH_PAPER=1) against the sequential decision at
  radii 0.25 / 0.5 / 0.75 (same n0 = 100, alpha = 0.001, n_max = n).
- Gaussian PREDICT (same networks): Cohen et al.'s binomial test at fixed n against the
  sequential PREDICT (the same test at anytime-valid looks, budget n).
- Column smoothing (the demo's s = 2 network, theta = 0.3) at a 5 x 5 patch: full enumeration
  (``counts`` then the certificate) against exact early exit (``certify``).
- Block smoothing (s = 10, theta = 0.3) at a 5 x 5 patch and DSSN (sigma = 0.5) at l1 radius
  0.5, networks trained on the demo digits (short training, cached): the full enumeration
  against exact early exit (``certify`` / ``decide_batch``).
- l0 ablation (keep 45, network trained with it, cached): fixed n = 10,000 (100,000 with
  FASTSMOOTH_BENCH_PAPER=1) against the sequential decision at l0 radii 3 / 6 / 9 (n0 = 1000,
  alpha = 0.05, n_max = n, the same seed).

Each row records forwards per image and certified accuracy of both roles in ``extra_info``;
the roles' times come from the same interleaved rounds.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import fastsmooth
from conftest import quick, run
from fastsmooth import methods
from fastsmooth.certificates import certify_counts
from fastsmooth.data import demo_mnist
from fastsmooth.demo import RECIPE, THRESHOLD, cache_dir
from fastsmooth.models import build, load_checkpoint
from fastsmooth.training import TrainConfig, save_checkpoint, train

N = 10_000 if quick() else 100_000
IMAGES = 100 if quick() else 500  # the average over images is what the sequential decision saves
PREDICT_IMAGES = 50 if quick() else 500
RADII = (0.25, 0.5, 0.75)


def _trained(
    name: str, given: dict, tag: str, in_channels: int = 1, copies: int = 2, epochs: int = 4, lr: float = 2e-3
) -> torch.nn.Module:
    """The MNIST CNN trained under method ``name``'s noise on the demo's training digits, cached
    as bench-{tag}-e{epochs}-c{copies}-seed0.pt (``tag`` names the method, its settings and any lr
    but the default)."""
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=128, copies=copies, optimizer="adam", seed=0)
    path = cache_dir() / f"bench-{tag}-e{config.epochs}-c{config.copies}-seed{config.seed}.pt"
    torch.manual_seed(0)
    model = build("mnist_cnn", in_channels=in_channels, num_classes=10)
    if path.is_file():
        load_checkpoint(model, path)
        return model.eval()
    train_set, _ = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    method = methods.get(name)
    hp = methods.resolve(method, given, (1, 28, 28))
    train(model, train_set, method.noise(hp, "image"), config, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, method=name, hyperparameters=hp, arch="mnist_cnn", in_channels=in_channels,
                    num_classes=10, image_shape=(1, 28, 28))
    return model.eval()


def _gaussian_model(sigma: float) -> torch.nn.Module:
    """The MNIST CNN trained with Gaussian noise of ``sigma`` on the demo's training digits (cached)."""
    return _trained("gaussian", {"sigma": sigma}, f"gaussian-s{sigma}")


def _column_model() -> torch.nn.Module:
    """The demo's column network (s = 2) if ``fastsmooth demo`` has cached it, else a shorter
    training of the same recipe (4 epochs), cached too."""
    path = cache_dir() / f"demo-column-s{RECIPE.size}-{RECIPE.key()}.pt"
    short = dataclasses.replace(RECIPE, epochs=4)
    model = build("mnist_cnn", in_channels=2, num_classes=10)
    for candidate in (path, cache_dir() / f"bench-column-s{RECIPE.size}-{short.key()}.pt"):
        if candidate.is_file():
            load_checkpoint(model, candidate)
            return model.eval()
    train_set, _ = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    method = methods.get("column")
    hp = methods.resolve(method, {"size": RECIPE.size, "threshold": THRESHOLD}, (1, 28, 28))
    torch.manual_seed(short.train_seed)
    model = build("mnist_cnn", in_channels=2, num_classes=10)
    config = TrainConfig(epochs=short.epochs, lr=short.lr, batch_size=short.batch_size, copies=short.copies,
                         optimizer=short.optimizer, seed=short.train_seed)
    train(model, train_set, method.noise(hp, short.per), config, progress=False)
    save_checkpoint(candidate, model, method="column", hyperparameters=hp, arch="mnist_cnn", in_channels=2,
                    num_classes=10, image_shape=(1, 28, 28))
    return model.eval()


def _held_out(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, test_set = demo_mnist(RECIPE.holdout, RECIPE.split_seed)
    x, y = test_set.tensors
    return x[:count], y[:count]


def _fixed_against_sequential(benchmark, group: str, y: torch.Tensor, levels: tuple, fixed_forwards: int,
                              certify, decide) -> None:
    """One row: ``certify()`` (fixed n, every level from its certificate) against ``decide(levels)``
    at each level alone (the question "certified at t?") and at all of them at once; forwards
    per image and certified accuracy of each role go to ``extra_info``."""
    out = {}

    def fixed():
        result = certify()
        ok = result.prediction == y
        out["fixed"] = ([float((ok & (result.certificate >= t)).float().mean()) for t in levels], fixed_forwards)

    def sequential(asked):
        def role():
            result = decide(asked)
            ok = result.prediction == y
            out[f"sequential at {asked}"] = (
                [float((ok & result.certified[:, k]).float().mean()) for k in range(len(asked))],
                float(result.forwards.float().mean()),
            )

        return role

    roles = {f"sequential r={t}": sequential((t,)) for t in levels}
    roles["sequential, all radii"] = sequential(levels)
    run(benchmark, fixed, group=group, role=f"fixed n={N}", rounds=1, primary=True, warmup=False, interleaved=roles)
    benchmark.extra_info.update(radii=levels, results=out)
    print(group, out)


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_gaussian_sequential_against_fixed_n(benchmark, sigma):
    model = _gaussian_model(sigma)
    x, y = _held_out(IMAGES)
    # one explicit batch for both roles: the time ratio then follows the forwards, not the auto timing
    smooth = fastsmooth.Smooth(model, 10, sigma, batch_size=1000)
    _fixed_against_sequential(
        benchmark, f"adaptive Gaussian, demo digits, sigma={sigma}, {IMAGES} images", y, RADII, 100 + N,
        lambda: smooth.certify_batch(x, 100, N, 0.001, seed=1),
        lambda levels: smooth.decide_batch(x, levels, n0=100, n_max=N, alpha=0.001, seed=1),
    )


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_gaussian_sequential_predict_against_fixed_n(benchmark, sigma):
    model = _gaussian_model(sigma)
    x, y = _held_out(PREDICT_IMAGES)
    # one explicit batch for both roles: the time ratio then follows the forwards, not the auto timing
    smooth = fastsmooth.Smooth(model, 10, sigma, batch_size=1000)
    out = {}

    def predict(sequential):
        def role():
            result = smooth.predict_batch(x, N, 0.001, sequential=sequential, seed=1)
            out["sequential" if sequential else "fixed"] = {
                "accuracy": float((result.prediction == y).float().mean()),
                "abstain": float((result.prediction == -1).float().mean()),
                "forwards": float(result.forwards.float().mean()),
            }

        return role

    run(benchmark, predict(False), group=f"adaptive Gaussian PREDICT, demo digits, sigma={sigma}, {PREDICT_IMAGES} images",
        role=f"fixed n={N}", rounds=1, primary=True, warmup=False, interleaved={"sequential": predict(True)})
    benchmark.extra_info.update(results=out)
    print(sigma, out)


def test_column_early_exit_against_full_enumeration(benchmark):
    model = _column_model()
    x, y = _held_out(200 if quick() else 1000)
    smoother = fastsmooth.ColumnSmoothing(model.eval(), 10, RECIPE.size, threshold=THRESHOLD)
    out = {}

    def full():
        prediction, certified = certify_counts(smoother.counts(x), smoother.delta(5, 28, 28))
        out["full"] = (float((certified & (prediction == y)).float().mean()), 28.0)

    def early():
        prediction, certified = smoother.certify(x, 5)
        out["early"] = (float((certified & (prediction == y)).float().mean()), float(smoother.last_units.float().mean()))

    run(benchmark, full, group="column early exit, demo digits, 5x5", role="full enumeration", rounds=3,
        primary=True, interleaved={"early exit": early})
    benchmark.extra_info.update(results=out)
    print(out)


def _accuracy(prediction: torch.Tensor, certified: torch.Tensor, y: torch.Tensor) -> float:
    return float((certified & (prediction == y)).float().mean())


def _early_exit_row(benchmark, group: str, total: int, y: torch.Tensor, full, early) -> None:
    """Times ``full()`` (the full enumeration: (prediction, certified)) against ``early()``
    ((prediction, certified, forwards per image)) and checks that their answers are identical."""
    out = {}

    def full_role():
        prediction, certified = full()
        out["full"] = (prediction, certified, float(total))

    def early_role():
        out["early"] = early()

    run(benchmark, full_role, group=group, role="full enumeration", rounds=1, primary=True, warmup=False,
        interleaved={"early exit": early_role})
    (p, c, _), (q, d, forwards) = out["full"], out["early"]
    assert torch.equal(p, q) and torch.equal(c, d), "early exit changed an answer"
    results = {k: (_accuracy(v[0], v[1], y), v[2]) for k, v in out.items()}
    benchmark.extra_info.update(results=results)
    print(group, results)


DIGITS = 200 if quick() else 1000


def test_block_early_exit_against_full_enumeration(benchmark):
    size, patch = 10, 5
    model = _trained("block", {"size": size, "threshold": THRESHOLD}, f"block-s{size}", in_channels=2, copies=4)
    x, y = _held_out(DIGITS)
    group = f"block early exit (s={size}), demo digits, {patch}x{patch}, {DIGITS} digits"
    smoother = fastsmooth.BlockSmoothing(model, 10, size, threshold=THRESHOLD)

    def full():
        return certify_counts(smoother.counts(x), smoother.delta(patch, 28, 28))

    def early():
        prediction, certified = smoother.certify(x, patch)
        return prediction, certified, float(smoother.last_units.float().mean())

    _early_exit_row(benchmark, group, 28 * 28, y, full, early)


def test_dssn_early_exit_against_full_enumeration(benchmark):
    sigma, radius = 0.5, 0.5
    model = _trained("dssn", {"sigma": sigma, "seed": 0}, f"dssn-s{sigma}")
    x, y = _held_out(DIGITS)
    group = f"DSSN early exit (sigma={sigma}), demo digits, l1 radius {radius}, {DIGITS} digits"
    dssn = fastsmooth.DSSN(model, 10, sigma=sigma)

    def full():
        prediction, radii = dssn.certify(x)
        return prediction, radii >= radius

    def early():
        decided = dssn.decide_batch(x, [radius])
        return decided.prediction, decided.certified[:, 0], float(decided.forwards.float().mean())

    _early_exit_row(benchmark, group, dssn.levels, y, full, early)


L0_RADII = (3, 6, 9)
L0_IMAGES = 50 if quick() else 500


def test_l0_sequential_against_fixed_n(benchmark):
    # 4 epochs at lr 2e-3 left this network voting one class for every digit (12% accuracy)
    model = _trained("ablation", {"keep": 45}, "ablation-k45-lr0.001", in_channels=2, copies=4, epochs=12, lr=1e-3)
    x, y = _held_out(L0_IMAGES)
    smoother = fastsmooth.RandomizedAblation(model, 10, 45, n0=1000, n=N, alpha=0.05)
    _fixed_against_sequential(
        benchmark, f"adaptive l0 (keep 45), demo digits, {L0_IMAGES} images", y, L0_RADII, 1000 + N,
        lambda: smoother.evaluate_batch(x, generator=torch.Generator().manual_seed(1)),
        lambda levels: smoother.decide_batch(x, levels, n0=1000, n_max=N, alpha=0.05,
                                             generator=torch.Generator().manual_seed(1)),
    )
