"""The sequential decision rules on Bernoulli streams: validity at the boundary and samples used.

    python benchmarks/sequential_audit.py [--n-max 10000] [--alpha 0.001] [--simulate 20000]

Over a grid of (smoothing scale sigma, radius r) with distinct thresholds p* = Phi(r / sigma)
(r = 0 is the abstention level p* = 1/2; 0.69, 0.84, 0.93, 0.98, 0.9987 the others) and true
probabilities p_A, computes for one level of ``fastsmooth.engine.Sequential``, exactly
(``fastsmooth.engine.audit.exact_total``, dynamic programming over the looks: no sampling noise),
the expected forwards per image (the selection of c_A included) and the probability of
certifying, for three deciders:

- before: the union-bound rule with n0 = 100 fixed selection samples;
- hybrid, fixed: the hybrid rule with n0 = 100 fixed selection samples;
- hybrid, adaptive (the default): the hybrid rule whose selection stops at 16, 32 or 64
  samples when a sign test at 0.001 shows the leader ahead, else at n0 = 100.

Selection is modelled on a two-class stream (class A at p_A, everything else lumped, A losing
ties: the hard case of the sign test); a wrong c_A (probability 1 - p_A per vote) is certified
only as often as the rule certifies 1 - p_A, which is counted, not assumed 0. Prints one row
per cell, then the ratios of forwards (per cell: median, range; and of the grid's total), of
estimation samples alone (selection excluded, as the audit reported before adaptive
selection), the largest loss of power, and the exact false-certification rate at p_A = p* (the
worst case of the null) at alpha 0.001, 0.01 and 0.05, of the estimation rule alone and with
its selection.

``--simulate N``: also runs the default decider (adaptive selection, n0 = 100) through
``update`` on N simulated two-class streams at the boundary p* = Phi(1) of each alpha and
prints the observed rate next to the exact one.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from fastsmooth.engine.audit import exact, exact_total, one_level, simulate_total

N0 = 100
LEVELS = ((0.25, 0.0), (0.5, 0.25), (0.25, 0.25), (0.5, 0.75), (0.25, 0.5), (0.25, 0.75))  # (sigma, r)
P_A = (0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
DECIDERS = {"union": dict(rule="union", selection="fixed"), "hybrid fixed": dict(rule="hybrid", selection="fixed"),
            "hybrid adaptive": dict(rule="hybrid", selection="adaptive")}


def summary(name: str, ratios: list[float], totals: np.ndarray) -> str:
    r = np.array(ratios)
    return (f"{name}: median {np.median(r):.3f}, min {r.min():.3f}, max {r.max():.3f}, "
            f"total {totals[0] / totals[1]:.3f} ({totals[0]:.0f} / {totals[1]:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-max", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--simulate", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    overall, selection_gain, rule_gain, sample_ratios = [], [], [], []
    totals = {key: np.zeros(2) for key in ("overall", "selection", "rule")}
    loss_overall = loss_selection = 0.0
    selection_samples = []
    print(f"n_max {args.n_max}, alpha {args.alpha}; forwards per image (selection included), P(certified)")
    print(f"{'sigma':>5} {'r':>5} {'p*':>7} {'p_A':>6} | {'union':>8} {'hyb fix':>8} {'hyb ada':>8} {'(sel)':>6} "
          f"{'ratio':>6} | {'P union':>8} {'P h fix':>8} {'P h ada':>8} {'P wrong':>8}")
    for sigma, r in LEVELS:
        p_star = float(norm.cdf(r / sigma))
        deciders = {k: one_level(args.n_max, args.alpha, p_star, n0=N0, **v) for k, v in DECIDERS.items()}
        for p in P_A:
            out = {k: exact_total(d, p) for k, d in deciders.items()}
            u, f, a = out["union"], out["hybrid fixed"], out["hybrid adaptive"]
            overall.append(u.forwards / a.forwards)
            selection_gain.append(f.forwards / a.forwards)
            rule_gain.append(u.forwards / f.forwards)
            totals["overall"] += (u.forwards, a.forwards)
            totals["selection"] += (f.forwards, a.forwards)
            totals["rule"] += (u.forwards, f.forwards)
            sample_ratios.append(exact(deciders["union"], p).samples / exact(deciders["hybrid adaptive"], p).samples)
            selection_samples.append(a.selection)
            if p > p_star:
                loss_overall = max(loss_overall, u.certified - a.certified)
                loss_selection = max(loss_selection, f.certified - a.certified)
            print(f"{sigma:5.2f} {r:5.2f} {p_star:7.4f} {p:6.3f} | {u.forwards:8.0f} {f.forwards:8.0f} "
                  f"{a.forwards:8.0f} {a.selection:6.1f} {u.forwards / a.forwards:6.2f} | {u.certified:8.4f} "
                  f"{f.certified:8.4f} {a.certified:8.4f} {a.wrong:8.1e}")
    print(summary("forwards union + fixed n0 / hybrid + adaptive selection", overall, totals["overall"]))
    print(summary("forwards hybrid + fixed n0 / hybrid + adaptive selection", selection_gain, totals["selection"]))
    print(summary("forwards union + fixed n0 / hybrid + fixed n0", rule_gain, totals["rule"]))
    samples_a = np.array(sample_ratios)
    print(f"estimation samples (selection excluded) union / hybrid: median {np.median(samples_a):.3f}, "
          f"min {samples_a.min():.3f}, max {samples_a.max():.3f}")
    print(f"selection samples of adaptive selection per cell: median {np.median(selection_samples):.1f}, "
          f"min {min(selection_samples):.1f}, max {max(selection_samples):.1f} (fixed: {N0})")
    print(f"largest loss of P(certified) where p_A > p*: union + fixed -> hybrid + adaptive {loss_overall:.2e}; "
          f"hybrid fixed -> adaptive {loss_selection:.2e}")
    print("exact P(false certification) at p_A = p* (worst over p* in 1/2, Phi(1), 0.99, 0.999), "
          "estimation alone | with selection:")
    for alpha in (0.001, 0.01, 0.05):
        qs = (0.5, float(norm.cdf(1.0)), 0.99, 0.999)
        alone = {k: max(exact(one_level(args.n_max, alpha, q, **v), q).certified for q in qs)
                 for k, v in DECIDERS.items() if k != "hybrid fixed"}
        total = {k: max(exact_total(one_level(args.n_max, alpha, q, n0=N0, **v), q).certified for q in qs)
                 for k, v in DECIDERS.items() if k != "hybrid fixed"}
        line = f"  alpha {alpha}: " + ", ".join(
            f"{k} {alone[k]:.5f} ({alone[k] / alpha:.2f} alpha) | {total[k]:.5f} ({total[k] / alpha:.2f} alpha)"
            for k in alone)
        if args.simulate:
            q = float(norm.cdf(1.0))
            certified, _, _ = simulate_total(lambda s: one_level(args.n_max, alpha, q, slots=s, n0=N0), q,
                                             args.simulate, seed=1)
            line += f"; simulated (hybrid adaptive) at p* = Phi(1): {certified.mean():.5f} of {args.simulate} " \
                    f"streams, exact {exact_total(one_level(args.n_max, alpha, q, n0=N0), q).certified:.5f}"
        print(line)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
