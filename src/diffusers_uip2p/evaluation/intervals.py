"""Intervals for the rates and paired differences the benchmarks report.

A rate from n edits comes with its Wilson score interval (it stays inside [0, 1] and behaves at 0 and n
successes, where the normal interval does not). Two methods run on the *same* edits are compared paired:
the difference of their success rates with the exact McNemar test on the discordant edits and a paired
bootstrap interval, and the mean difference of a per-edit figure (PSNR outside) with a paired bootstrap.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import check_number

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (95 % by default)."""
    if n <= 0:
        raise ValueError(f"`n` must be positive, got {n}.")
    if not 0 <= successes <= n:
        raise ValueError(f"`successes` must lie in 0..n={n}, got {successes}.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(a: list[bool], b: list[bool]) -> float:
    """Two-sided exact McNemar p-value for paired outcomes: a binomial test on the discordant pairs."""
    a, b = _paired(a, b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2 * tail)


def paired_bootstrap(a, b, num_resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``a − b`` over the same edits, with a percentile bootstrap interval over edits.

    Edits where either value is missing or not finite (e.g. no region outside the edit) are left out; when
    none is left, the result says so with ``n`` 0 and NaN figures."""
    check_number(num_resamples, "num_resamples", low=1, integer=True)
    check_number(level, "level", low=0, low_open=True, high=1)
    a, b = (np.asarray(x, dtype=np.float64) for x in _paired(a, b, dtype=np.float64))
    keep = np.isfinite(a) & np.isfinite(b)
    difference = a[keep] - b[keep]
    if difference.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, difference.size, (num_resamples, difference.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(difference.mean()), "low": float(low), "high": float(high), "n": int(difference.size)}


def compare_paired(successes_a: list[bool], successes_b: list[bool]) -> dict:
    """Success of A minus success of B on the same edits: difference, bootstrap interval, McNemar p."""
    difference = paired_bootstrap([float(x) for x in successes_a], [float(x) for x in successes_b])
    a, b = _paired(successes_a, successes_b)
    return {**difference, "only_a": int(np.sum(a & ~b)), "only_b": int(np.sum(~a & b)),
            "mcnemar_p": mcnemar_p(successes_a, successes_b)}


def _paired(a, b, dtype=bool):
    a = np.array([np.nan if x is None else x for x in a], dtype=dtype)
    b = np.array([np.nan if x is None else x for x in b], dtype=dtype)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two flat lists of the same length, got {a.shape} and {b.shape}.")
    return a, b
