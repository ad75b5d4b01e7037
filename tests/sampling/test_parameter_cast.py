"""Start-up pieces of the sampler that must not change what is sampled: parameters cast on the host,
and the per-seed random streams computed by small jitted programs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.sampling.pipeline import cast_leaf, seed_key, seed_stream, stream_noise


def test_host_parameters_are_cast_on_the_host():
    a = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float16)
    out = cast_leaf(a, jnp.float32)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32  # no device program per shape
    np.testing.assert_array_equal(out, a.astype(np.float32))
    assert cast_leaf(a, jnp.bfloat16).dtype == jnp.bfloat16
    ids = np.arange(4, dtype=np.int32)
    assert cast_leaf(ids, jnp.float16).dtype == np.int32  # integer buffers keep their dtype


def test_device_parameters_are_cast_on_the_device():
    a = jnp.ones((2, 2), jnp.float32)
    out = cast_leaf(a, jnp.bfloat16)
    assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16
    assert cast_leaf(jnp.arange(3), jnp.bfloat16).dtype == jnp.arange(3).dtype


@pytest.mark.parametrize("seed", [0, 42, 2**32 + 7, 2**64 - 1])
def test_streams_are_threefry_fold_in_of_the_seeds_64_bits(seed):
    key = jnp.array([seed >> 32, seed & 0xFFFFFFFF], jnp.uint32)
    for stream in (0, 1, 10):
        expected = jax.random.fold_in(key, stream)
        np.testing.assert_array_equal(seed_stream([seed], stream)[0], expected)
        np.testing.assert_array_equal(stream_noise([seed, 3], stream, (2, 3))[0],
                                      jax.random.normal(expected, (2, 3), jnp.float32))


def test_seed_out_of_range_is_refused():
    with pytest.raises(ValueError, match="seed must be in"):
        seed_key(2**64)
