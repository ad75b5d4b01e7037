"""Shared by the benchmarks: the median wall time of repeated calls."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn` (each call must block until its work is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
