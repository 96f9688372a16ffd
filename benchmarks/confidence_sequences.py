"""How many samples each anytime-valid confidence sequence needs, on real sample streams.

    python benchmarks/confidence_sequences.py [--sigma 0.25 0.5] [--images 100] [--n 10000]

For each of the first ``--images`` held-out demo digits, draws n0 + n Gaussian samples once
with the network trained with that sigma's noise (the fixture of benchmarks/test_adaptive.py,
cached) and keeps the class of every sample. Every candidate decision rule then reads the same
streams, so the comparison has no sampling noise between rules:

- ``fastsmooth.engine.Sequential`` itself (fed prefix counts, as the engine does): the
  union-bound rule with schedules of looks (first look, growth) and shares of alpha at n_max,
  and the hybrid rule (the default since; docs/sequential-rule.md) with n0 fixed selection
  samples and with adaptive selection (the default: c_A fixed at 16, 32 or 64 samples when a
  sign test shows the leader ahead), each for the radius alone and with the abstention level 0
  that ``decide_batch`` adds (``predict=True``);
- a beta-binomial mixture confidence sequence (Robbins 1970; Howard et al. 2021), looked at
  every 50 samples: {p : B(a + k, b + m - k) / (B(a, b) p^k (1 - p)^(m - k)) < 1 / alpha};

against Cohen et al.'s fixed-n CERTIFY on the same samples. Prints the mean forwards per image
(n0 included), the ratio to fixed n and the certified accuracy at each radius.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import betaln
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).parent))
from test_adaptive import _gaussian_model, _held_out  # noqa: E402

from fastsmooth.demo import cache_dir  # noqa: E402
from fastsmooth.engine import Sequential, schedule  # noqa: E402
from fastsmooth.stats import clopper_pearson_lower  # noqa: E402

N0, ALPHA = 100, 0.001
CHUNK = 2020  # samples per forward while drawing the streams


def streams(sigma: float, images: int, n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(classes [images, n0 + n] int8, labels [images]) of noised copies of held-out digits,
    cached in fastsmooth's cache directory (drawing them is most of the cost)."""
    path = cache_dir() / f"streams-gaussian-s{sigma}-i{images}-n{n}-seed{seed}.npz"
    if path.is_file():
        saved = np.load(path)
        return saved["classes"], saved["labels"]
    model = _gaussian_model(sigma)
    x, y = _held_out(images)
    gen = torch.Generator().manual_seed(seed)
    out = np.zeros((images, N0 + n), dtype=np.int8)
    with torch.inference_mode():
        for i in range(images):
            for a in range(0, N0 + n, CHUNK):
                b = min(N0 + n, a + CHUNK)
                noisy = x[i : i + 1] + sigma * torch.randn(b - a, *x.shape[1:], generator=gen)
                out[i, a:b] = model(noisy).argmax(1).numpy()
    np.savez(path, classes=out, labels=y.numpy())
    return out, y.numpy()


def run_decider(decider: Sequential, classes: np.ndarray) -> tuple[int, list[bool], int]:
    """(prediction, certified per level, forwards) of a one-slot decider on one stream (its
    selection samples are ``decider.selected[0]`` after the run)."""
    target = decider.start(0)
    while True:
        counts = torch.from_numpy(np.bincount(classes[:target], minlength=10)[None].astype(np.int64))
        nxt = decider.update([0], counts, [target])[0]
        if nxt is None:
            return int(decider.prediction[0]), decider.certified[0].tolist(), target
        target = nxt


def mixture_bounds(k: int, m: int, a: float = 1.0, b: float = 1.0) -> tuple[float, float]:
    """The beta-binomial mixture confidence sequence's interval at m samples with k hits."""
    def inside(p: float) -> bool:
        return betaln(a + k, b + m - k) - betaln(a, b) - k * np.log(p) - (m - k) * np.log1p(-p) < np.log(1 / ALPHA)

    def bisect(lo: float, hi: float, lower: bool) -> float:
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if inside(mid) == lower:
                hi = mid
            else:
                lo = mid
        return lo if lower else hi

    ph = k / m
    low = 0.0 if k == 0 else bisect(1e-12, ph, True)
    high = 1.0 if k == m else bisect(ph, 1 - 1e-12, False)
    return low, high


def run_mixture(classes: np.ndarray, p_star: float, n: int, step: int = 50) -> tuple[bool, int]:
    c = int(np.bincount(classes[:N0], minlength=10).argmax())
    hits = np.cumsum(classes[N0:] == c)
    for m in list(range(step, n, step)) + [n]:
        low, high = mixture_bounds(int(hits[m - 1]), m)
        if low >= p_star:
            return True, N0 + m
        if high < p_star:
            break
    return False, N0 + m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--no-beta-binomial", action="store_true", help="skip the (slow) beta-binomial mixture")
    args = parser.parse_args()
    union = dict(rule="union", abstain=False)
    rules = {"union bound, 100 x 2, alpha / K": dict(first=100, growth=2.0, final_share=None, **union),
             "union bound, 64 x 1.5, alpha / K": dict(first=64, growth=1.5, final_share=None, **union),
             "union bound, 64 x 1.5, alpha / 2 at n": dict(first=64, growth=1.5, final_share=0.5, **union),
             "union bound, 64 x 1.5, alpha / 2 at n, + level 0": dict(first=64, growth=1.5, final_share=0.5,
                                                                     rule="union", abstain=True),
             "hybrid, fixed n0": dict(first=64, growth=1.5, final_share=0.5, rule="hybrid", abstain=False,
                                      selection="fixed"),
             "hybrid, fixed n0, + level 0": dict(first=64, growth=1.5, final_share=0.5, rule="hybrid", abstain=True,
                                                 selection="fixed"),
             "hybrid (default), adaptive selection": dict(first=64, growth=1.5, final_share=0.5, rule="hybrid",
                                                          abstain=False, selection="adaptive"),
             "hybrid (default), adaptive selection, + level 0": dict(first=64, growth=1.5, final_share=0.5,
                                                                     rule="hybrid", abstain=True,
                                                                     selection="adaptive")}
    for sigma in args.sigma:
        classes, labels = streams(sigma, args.images, args.n)
        for r in args.radii:
            p_star = float(norm.cdf(r / sigma))
            c_a = np.array([np.bincount(s[:N0], minlength=10).argmax() for s in classes])
            hits = (classes[:, N0:] == c_a[:, None]).sum(1)
            p_low = clopper_pearson_lower(hits, np.full(len(hits), args.n), ALPHA)
            fixed = float(np.mean((c_a == labels) & (p_low >= p_star)))
            print(f"sigma {sigma} r {r}: fixed n={args.n}: {N0 + args.n} forwards, certified accuracy {fixed:.3f}")

            def radius(p: np.ndarray) -> np.ndarray:
                return np.where(p < 0.5, -np.inf, sigma * norm.ppf(p))

            for name, rule in rules.items():
                share = rule["final_share"]
                if share is None:  # alpha / K at each of the K looks
                    share = 1 / len(schedule(args.n, rule["first"], rule["growth"]))
                levels = [r, 0.0] if rule["abstain"] else [r]  # level 0: decide_batch's abstention
                deciders = [Sequential(N0, args.n, ALPHA, levels, radius, 1, first=rule["first"], growth=rule["growth"],
                                       final_share=share, rule=rule["rule"], selection=rule.get("selection"))
                            for _ in classes]
                answers = [run_decider(d, s) for d, s in zip(deciders, classes)]
                forwards = np.mean([a[2] for a in answers])
                selected = np.mean([int(d.selected[0]) for d in deciders])
                accuracy = np.mean([a[0] == y and all(a[1]) for a, y in zip(answers, labels)])
                print(f"  {name:48s} {forwards:8.1f} forwards ({(N0 + args.n) / forwards:5.1f}x fewer; "
                      f"{selected:5.1f} selection), certified accuracy {accuracy:.3f}")
            if args.no_beta_binomial:
                continue
            mixed = [run_mixture(s, p_star, args.n) for s in classes]
            forwards = np.mean([f for _, f in mixed])
            accuracy = np.mean([ok and c == y for (ok, _), c, y in zip(mixed, c_a, labels)])
            print(f"  {'beta-binomial mixture (1, 1), every 50':48s} {forwards:8.1f} forwards "
                  f"({(N0 + args.n) / forwards:5.1f}x fewer), certified accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
