"""The sequential decision rules on Bernoulli streams: validity at the boundary and samples used.

    python benchmarks/sequential_audit.py [--n-max 10000] [--alpha 0.001] [--simulate 20000]

Over a grid of (smoothing scale sigma, radius r) with distinct thresholds p* = Phi(r / sigma)
(r = 0 is the abstention level p* = 1/2; 0.69, 0.84, 0.93, 0.98, 0.9987 the others) and true
probabilities p_A, computes for one level of
``fastsmooth.engine.Sequential`` under the union-bound rule (before) and the hybrid rule (now),
exactly (``fastsmooth.engine.audit.exact``, dynamic programming over the looks: no sampling
noise), the expected forwards (n0 = 100 selection samples included) and the probability of
certifying. Prints one row per cell, then the ratios of forwards (per cell: median, range; and
of the grid's total) and of estimation samples alone, the largest loss of power, and the exact false-certification rate of both
rules at p_A = p* (the worst case of the null) at alpha 0.001, 0.01 and 0.05.

``--simulate N``: also runs the hybrid decider through ``update`` on N simulated streams at the
boundary of each alpha and prints the observed rate next to the exact one.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from fastsmooth.engine.audit import exact, one_level, simulate

N0 = 100
LEVELS = ((0.25, 0.0), (0.5, 0.25), (0.25, 0.25), (0.5, 0.75), (0.25, 0.5), (0.25, 0.75))  # (sigma, r)
P_A = (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-max", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--simulate", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    ratios, sample_ratios, totals, power_loss = [], [], np.zeros(2), 0.0
    print(f"n_max {args.n_max}, alpha {args.alpha}; forwards per image (n0 = {N0} included), P(certified)")
    print(f"{'sigma':>5} {'r':>5} {'p*':>7} {'p_A':>6} | {'union':>8} {'hybrid':>8} {'ratio':>6} | "
          f"{'P union':>8} {'P hybrid':>8}")
    for sigma, r in LEVELS:
        p_star = float(norm.cdf(r / sigma))
        union = one_level(args.n_max, args.alpha, p_star, rule="union")
        hybrid = one_level(args.n_max, args.alpha, p_star, rule="hybrid")
        for p in P_A:
            before, after = exact(union, p), exact(hybrid, p)
            f_before, f_after = N0 + before.samples, N0 + after.samples
            ratios.append(f_before / f_after)
            sample_ratios.append(before.samples / after.samples)
            totals += (f_before, f_after)
            if p > p_star:
                power_loss = max(power_loss, before.certified - after.certified)
            print(f"{sigma:5.2f} {r:5.2f} {p_star:7.4f} {p:6.3f} | {f_before:8.0f} {f_after:8.0f} "
                  f"{f_before / f_after:6.2f} | {before.certified:8.4f} {after.certified:8.4f}")
    ratios_a = np.array(ratios)
    print(f"forwards union / hybrid over {len(ratios)} cells: median {np.median(ratios_a):.3f}, "
          f"min {ratios_a.min():.3f}, max {ratios_a.max():.3f}, total {totals[0] / totals[1]:.3f} "
          f"({totals[0]:.0f} / {totals[1]:.0f})")
    samples_a = np.array(sample_ratios)
    print(f"estimation samples (n0 excluded) union / hybrid: median {np.median(samples_a):.3f}, "
          f"min {samples_a.min():.3f}, max {samples_a.max():.3f}")
    print(f"largest loss of P(certified) where p_A > p*: {power_loss:.4f}")
    print("exact P(false certification) at p_A = p* (worst over p* in 1/2, Phi(1), 0.99, 0.999):")
    for alpha in (0.001, 0.01, 0.05):
        worst = {rule: max(exact(one_level(args.n_max, alpha, q, rule=rule), q).certified
                           for q in (0.5, float(norm.cdf(1.0)), 0.99, 0.999)) for rule in ("union", "hybrid")}
        line = f"  alpha {alpha}: union {worst['union']:.5f} ({worst['union'] / alpha:.2f} alpha), " \
               f"hybrid {worst['hybrid']:.5f} ({worst['hybrid'] / alpha:.2f} alpha)"
        if args.simulate:
            q = float(norm.cdf(1.0))
            certified, _ = simulate(lambda s: one_level(args.n_max, alpha, q, slots=s), q, args.simulate, seed=1)
            line += f"; simulated at p* = Phi(1): {certified.mean():.5f} of {args.simulate} streams, " \
                    f"exact {exact(one_level(args.n_max, alpha, q), q).certified:.5f}"
        print(line)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
