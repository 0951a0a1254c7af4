"""Paired timing for the benchmarks: baseline and candidate alternate within each round, so a
drift in machine load hits both alike; figures are medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(
    baseline: Callable[[], object], candidate: Callable[[], object], repeats: int, warmup: int = 1
) -> tuple[float, float, float]:
    """Median baseline time, median candidate time and median per-round ratio candidate/baseline."""
    for _ in range(warmup):
        baseline(), candidate()
    rounds = [(timed(baseline), timed(candidate)) for _ in range(repeats)]
    base = statistics.median(b for b, _ in rounds)
    cand = statistics.median(c for _, c in rounds)
    return base, cand, statistics.median(c / b for b, c in rounds)
