"""EigenScore: llmkit's EES (Chebyshev–Hutchinson log-det) against the exact log-det, for accuracy
and for speed, in the same process; and SeND's released EES on the same matrices, for comparison.

Matrices are low rank plus noise, sized d×K (features × answers) as the paper writes them: the
(K, d) embeddings are (N(K×r)·s) @ N(r×d) + σ·N(K×d), seeded, and both methods get the same
centred matrix. The quantity is log det(Zᵀ J_d Z + αI), α = 1e-3; EigenScore is it over K.

Accuracy: `--count` matrices at each size (r ~ U{1..8}, s ~ U(0.5, 5), σ ~ U(0.05, 1)); Pearson r
and median relative error |EES − exact|/|exact| of EES (default EESConfig, seed = the matrix's
index) against the exact log-det. Goals: r ≥ 0.99 and median ≤ 2% at each size. Beside them, the
Pearson r of SeND's official EES (as its code computes it, see `send_official_ees`) against the
exact EigenScore, which shows what its cos(m·x)-for-T_m(x) bug costs.
Speed: r = 6, s = 2, σ = 0.5 at 20000×5000 and 4096×10; `logdet_ees` against `logdet_exact`
(paired rounds, medians), the relative error, and what `choose_method` (method="auto") picks.
Goals: EES/exact ≤ 0.33x at 20000×5000, and auto picks exact at 4096×10.

    python benchmarks/bench_eigenscore.py                          # about 10 minutes on 2 cores
    python benchmarks/bench_eigenscore.py --count 20 --sizes 2048x10
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch
from _timing import paired
from scipy.integrate import quad

from llmkit.metrics.eigenscore import EESConfig, centered, choose_method, logdet_ees, logdet_exact

ACCURACY_GOALS = {"pearson": 0.99, "median_rel_err": 0.02}
SPEED_GOAL = 0.33
SPEED_SIZES = ((20000, 5000, 3), (4096, 10, 21))  # d, K, paired rounds; the goal at K > 100 is speed, at K = 10 auto


def low_rank_plus_noise(rng: np.random.Generator, k: int, d: int, rank: int, signal: float, noise: float) -> np.ndarray:
    """(K, d) embeddings: a rank-`rank` signal of scale `signal` plus Gaussian noise of scale `noise`."""
    return (rng.normal(size=(k, rank)) * signal) @ rng.normal(size=(rank, d)) + noise * rng.normal(size=(k, d))


def send_power_method(x: np.ndarray, rng: np.random.Generator, iterations: int = 500, tol: float = 1.0) -> float:
    """σ_max(X) as SeND's efficient.py estimates it: power iterations on XᵀX from a uniform random
    start, stopped once the normalised iterate moves by less than `tol` (1: after a few steps)."""
    b = rng.random(x.shape[1])
    for _ in range(iterations):
        b_new = x.T @ (x @ b)
        b_new /= np.linalg.norm(b_new)
        if np.linalg.norm(b_new - b) < tol:
            break
        b = b_new
    return float(np.linalg.norm(x @ b_new))


@functools.cache
def send_c_m(m: int) -> float:
    """SeND's `compute_c_m`: (2/π)∫_0^1 log(x)·cos(m·x)/sqrt(1−x²) dx, cos(m·x) where T_m(x) belongs."""
    value, _ = quad(lambda x: np.log(x) * np.cos(m * x) / np.sqrt(1 - x**2), 0, 1, limit=500)
    return value * 2 / np.pi


def send_official_ees(x: np.ndarray, rng: np.random.Generator, moments: int = 20, probes: int = 20) -> float:
    """SeND's released EES (efficient.py's functions, as send_pythia.py calls them, without the exact
    SVD log-det its training scripts add to it), reproducing its bug, for comparison only.

    X (d, K) is standardised per column over the d rows (Algorithm 1, lines 1-4) and divided by σ_max
    from `send_power_method`; A = XᵀX. Moments d_m = (1/(K·N_z))·Σ_j z_jᵀ T_m(A) z_j, m = 1..M, from
    the unshifted recurrence T_0 z = z, T_1 z = Az, T_m z = 2A·T_{m−1}z − T_{m−2}z on N_z Gaussian
    probes (as one block; the code loops over them); EES = Σ_m d_m·c_m with `send_c_m`."""
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = x / send_power_method(x, rng)
    k = x.shape[1]
    z = rng.standard_normal((k, probes))
    previous, current = z, x.T @ (x @ z)
    traces = [np.sum(z * current)]
    for _ in range(2, moments + 1):
        previous, current = current, 2 * (x.T @ (x @ current)) - previous
        traces.append(np.sum(z * current))
    d_m = np.array(traces) / (k * probes)
    return float(d_m @ np.array([send_c_m(m) for m in range(1, moments + 1)]))


def accuracy(d: int, k: int, count: int) -> None:
    """EES and SeND's EES against the exact log-det on `count` random d×K matrices; prints one row."""
    exact, ees, send = [], [], []
    for i in range(count):
        rng = np.random.default_rng([d, k, i])
        embeddings = low_rank_plus_noise(
            rng, k, d, int(rng.integers(1, 9)), rng.uniform(0.5, 5), rng.uniform(0.05, 1.0)
        )
        z = centered(torch.from_numpy(embeddings))
        exact.append(logdet_exact(z))
        ees.append(logdet_ees(z, config=EESConfig(seed=i)))
        send.append(send_official_ees(embeddings.T, rng))
    exact, ees = np.array(exact), np.array(ees)
    pearson = np.corrcoef(exact, ees)[0, 1]
    rel_err = np.abs(ees - exact) / np.abs(exact)
    send_pearson = np.corrcoef(exact / k, send)[0, 1]
    met = pearson >= ACCURACY_GOALS["pearson"] and np.median(rel_err) <= ACCURACY_GOALS["median_rel_err"]
    print(
        f"{f'{d}×{k}':<11} {count:>8} {pearson:>9.5f} {100 * np.median(rel_err):>14.3f}% {100 * rel_err.max():>11.3f}% "
        f"{'ok' if met else 'MISSED':>6} {send_pearson:>15.3f}"
    )


def speed(d: int, k: int, repeats: int) -> None:
    """`logdet_ees` against `logdet_exact` on one d×K matrix (r = 6, s = 2, σ = 0.5); prints one row."""
    z = centered(torch.from_numpy(low_rank_plus_noise(np.random.default_rng(0), k, d, 6, 2.0, 0.5)))
    exact, ees = logdet_exact(z), logdet_ees(z)  # also the warm-up of both
    base, cand, ratio = paired(lambda: logdet_exact(z), lambda: logdet_ees(z), repeats, warmup=0)
    picks = choose_method(k, d)
    if k > 100:
        goal, met = f"EES/exact ≤ {SPEED_GOAL:.2f}x", ratio <= SPEED_GOAL
    else:
        goal, met = "auto picks exact", picks == "exact"
    print(
        f"{f'{d}×{k}':<11} {repeats:>6} {1000 * base:>10.1f} {1000 * cand:>10.1f} {ratio:>9.3f}x "
        f"{100 * abs(ees - exact) / abs(exact):>9.4f}% {picks:>6}   {goal} {'ok' if met else 'MISSED'}"
    )


def size(text: str) -> tuple[int, int]:
    """'2048x10' → (d, K) = (2048, 10)."""
    d, k = text.lower().replace("×", "x").split("x")
    return int(d), int(k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="random matrices per accuracy size")
    parser.add_argument(
        "--sizes", type=size, nargs="+", default=[(2048, 10), (5000, 2000)], help="accuracy sizes, d×K, e.g. 2048x10"
    )
    options = parser.parse_args()

    print(
        "Accuracy: log det(ZᵀJ_dZ + αI) by EES (EESConfig defaults) against exact; SeND's official EES "
        "(M = 20, N_z = 20) against the exact EigenScore"
    )
    print(
        f"goals: Pearson r ≥ {ACCURACY_GOALS['pearson']}, median relative error ≤ "
        f"{100 * ACCURACY_GOALS['median_rel_err']:.0f}%"
    )
    print(
        f"{'size (d×K)':<11} {'matrices':>8} {'Pearson r':>9} {'median rel err':>15} {'max rel err':>12} {'goals':>6} "
        f"{'SeND official r':>15}"
    )
    for d, k in options.sizes:
        accuracy(d, k, options.count)

    print("\nSpeed: logdet_ees against logdet_exact on the same centred matrix (paired rounds, medians)")
    print(
        f"{'size (d×K)':<11} {'rounds':>6} {'exact ms':>10} {'EES ms':>10} {'EES/exact':>10} {'rel err':>10} "
        f"{'auto':>6}   goal"
    )
    for d, k, repeats in SPEED_SIZES:
        speed(d, k, repeats)


if __name__ == "__main__":
    main()
