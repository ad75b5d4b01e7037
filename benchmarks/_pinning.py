"""Shared by the CPU benchmarks: pin the process to N cores (before jax/torch start their thread pools)
and report the machine's load while a benchmark runs."""
from __future__ import annotations

import os
import platform


def pin_threads(threads: int) -> int:
    """Restrict this process to its first `threads` allowed cores, so XLA's and torch's pools get the same
    count (XLA sizes its pool from the affinity mask at start-up). Call before importing jax or torch."""
    cores = sorted(os.sched_getaffinity(0))[:max(1, threads)]
    os.sched_setaffinity(0, cores)
    os.environ.setdefault("OMP_NUM_THREADS", str(len(cores)))
    return len(cores)


def load_average() -> float:
    """1-minute load average (other processes competing for the cores)."""
    return os.getloadavg()[0]


def machine_line(threads: int) -> str:
    import jax
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} threads each, "
            f"jax {jax.__version__} backend {jax.default_backend()} ({jax.devices()[0].device_kind})")
