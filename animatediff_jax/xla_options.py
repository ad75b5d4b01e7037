"""XLA compiler options per backend, and `jit`: `jax.jit` compiling with them.

On CPU, XLA (jaxlib 0.10) hands convolutions, normalisation reductions and elementwise chains to the
YNNPACK library by default. On CPU the package sends YNNPACK individual dots and reductions only
(`xla_cpu_experimental_ynn_fusion_type`), keeping convolutions and elementwise chains in XLA's own
kernels. Measured on 2 cores, interleaved in one process (`PYTHONPATH=. python
benchmarks/cpu_compiler_options.py --threads 2`; BENCHMARKS.md): on a 2-core EPYC with 512 KiB L2 per
core (2026-12-01, load 1.7) dots-only made the small SD1.x + MotionAdapter UNet forward of
`sample_speed.py` (CFG batch 2 x 16 frames) 1.27x / 1.46x faster than the defaults at 16x16 / 32x32
latents; on one with 2 MiB L2 per core (2026-12-02, load 2.7-3.0), adding the reductions made the
`chunked` self-attention at SD1.5's first level 1.65x faster than dots-only (its online softmax's max
and sum) and the UNet forward 1.02-1.03x. Outputs differ from the defaults' by float32 rounding (~5e-6
on the UNet's output).

Other backends compile with XLA's defaults. A jaxlib that does not know the option (it is
experimental) compiles with the defaults too: one tiny program is compiled with it first to find out.
The options are chosen when a function is jitted, which starts JAX's backend: jit inside functions,
never at import (multi-host training must call `jax.distributed.initialize` first).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """The options for JAX's default backend: `CPU_OPTIONS` on CPU when this jaxlib accepts them, else
    None (XLA's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - any refusal means: this jaxlib has no such option
        return None
    return dict(CPU_OPTIONS)


def jit(fun: Callable | None = None, /, **kwargs: Any) -> Callable:
    """`jax.jit(fun, **kwargs)` compiling with `compiler_options()`; usable as `@jit` or `@jit(...)`."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
