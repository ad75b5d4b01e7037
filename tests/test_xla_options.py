"""xla_options: on CPU, convolutions stay with XLA's own kernels while matrix products and reductions
(attention's softmax) go to YNNPACK, in programs jitted by the package and in those the program cache compiles; a jaxlib without the option
compiles with XLA's defaults. (Speed: benchmarks/cpu_compiler_options.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax import xla_options
from animatediff_jax.sampling.program_cache import DiskCachedProgram

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are CPU options")


def _conv(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.maximum(y, 0.0)


def _softmax_sums(s):
    return jnp.exp(s - s.max(-1, keepdims=True)).sum(-1)


def _dot(a, b):
    return jnp.tanh(a @ b)


def _args():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((2, 8, 8, 32), np.float32), rng.standard_normal((3, 3, 32, 32), np.float32) * 0.1)


def _ynn_fusions_with(text: str, op: str) -> int:
    """How many YNNPACK fusions of a compiled program contain `op` (in their fused computation)."""
    comps, name = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else "ENTRY"
            comps[name] = []
        elif name:
            comps[name].append(line)
    called = [line.split("calls=")[1].split(",")[0].lstrip("%") for lines in comps.values() for line in lines
              if "ynn_fusion" in line.split("=")[0] and "calls=" in line]
    return sum(any(f" {op}(" in line for line in comps.get(c, [])) for c in called)


@pytest.fixture(autouse=True)
def _fresh_options():
    xla_options.compiler_options.cache_clear()
    yield
    xla_options.compiler_options.cache_clear()


def test_cpu_options_keep_convolutions_out_of_ynnpack_and_dots_and_reductions_in():
    assert xla_options.compiler_options() == xla_options.CPU_OPTIONS
    x, w = _args()
    default = jax.jit(_conv).lower(x, w).compile().as_text()
    ours = xla_options.jit(_conv).lower(x, w).compile().as_text()
    assert _ynn_fusions_with(default, "convolution") == 1  # XLA's default: the case the option is for
    assert _ynn_fusions_with(ours, "convolution") == 0
    a = np.ones((64, 64), np.float32)
    assert _ynn_fusions_with(xla_options.jit(_dot).lower(a, a).compile().as_text(), "dot") == 1
    s = np.ones((64, 512), np.float32)
    assert _ynn_fusions_with(xla_options.jit(_softmax_sums).lower(s).compile().as_text(), "reduce") == 1
    np.testing.assert_allclose(xla_options.jit(_conv)(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-4)


def test_programs_from_the_program_cache_compile_with_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path))
    x, w = _args()
    for attempt in ("exported now", "read from disk"):
        program = DiskCachedProgram("conv", "test", xla_options.jit(_conv))
        np.testing.assert_allclose(program(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-4)
        (compiled,) = program._programs.values()
        assert _ynn_fusions_with(compiled.as_text(), "convolution") == 0, attempt


def test_a_jaxlib_without_the_option_compiles_with_the_defaults(monkeypatch):
    monkeypatch.setattr(xla_options, "CPU_OPTIONS", {"xla_cpu_no_such_option_in_any_jaxlib": "1"})
    assert xla_options.compiler_options() is None
    x, w = _args()
    np.testing.assert_allclose(xla_options.jit(_conv)(x, w), jax.jit(_conv)(x, w), rtol=1e-6)


def test_usable_as_a_decorator_with_arguments():
    @xla_options.jit(static_argnames=("n",))
    def power(x, n):
        return x ** n
    assert float(power(jnp.float32(3.0), n=2)) == 9.0
