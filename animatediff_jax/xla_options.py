"""XLA compiler options per backend, and `jit`: `jax.jit` compiling with them.

On CPU, XLA (jaxlib 0.10) hands convolutions, normalisation reductions and elementwise chains to the
YNNPACK library by default; for this project's networks its convolutions and reductions are slower
than XLA's own (Eigen) kernels, while its individual matrix products are faster. So on CPU only
individual dots go to YNNPACK (`xla_cpu_experimental_ynn_fusion_type`). Measured on 2 cores,
interleaved in one process (`PYTHONPATH=. python benchmarks/cpu_compiler_options.py --threads 2`,
medians of 5 rounds, load 1.7): the small SD1.x + MotionAdapter UNet forward of `sample_speed.py`, CFG
batch 2 x 16 frames, 1.40 s -> 1.09 s at 16x16 latents and 8.1 s -> 6.3 s at 32x32; one 3x3
convolution (32 x 16 x 16 x 192 -> 64) 57 ms -> 39 ms. Outputs differ from the defaults' by float32
rounding (~6e-6 on the UNet's output).

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

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


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
