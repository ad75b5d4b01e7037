"""Sliding context windows (FreeNoise): coverage, weighting, exactness, noise rescheduling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.sampling.context_windows import (ContextOptions, context_windows, reschedule_noise,
                                     shuffled_noise_indices, window_weights, windowed)


@pytest.mark.parametrize("frames,length,stride", [(40, 16, 4), (17, 8, 3), (9, 4, 4), (5, 16, 4)])
def test_windows_cover_every_frame(frames, length, stride):
    w = context_windows(frames, length, stride)
    assert w.shape[1] == min(length, frames)
    assert set(w.ravel().tolist()) == set(range(frames))
    assert all((np.diff(row) == 1).all() for row in w)  # contiguous
    assert w[0, 0] == 0 and w[-1, -1] == frames - 1


def test_pyramid_weights():
    np.testing.assert_array_equal(window_weights(4, "pyramid"), [1, 2, 2, 1])
    np.testing.assert_array_equal(window_weights(5, "pyramid"), [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(window_weights(3, "uniform"), [1, 1, 1])


def test_single_window_is_the_plain_call_exactly():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 3, 5, 4))
    fn = lambda v, idx: jnp.tanh(v * 1.7) + jnp.cumsum(v, axis=1)  # mixes frames
    out = windowed(fn, x, ContextOptions(length=6, stride=2))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(fn(x, None)))
    out = windowed(fn, x, ContextOptions(length=16, stride=4))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(fn(x, None)))


@pytest.mark.parametrize("weighting", ["uniform", "pyramid"])
def test_windowed_mean_matches_numpy(weighting):
    frames, length, stride = 11, 4, 3
    x = jax.random.normal(jax.random.PRNGKey(1), (1, frames, 2, 2, 3))
    fn = lambda v, idx: jnp.cumsum(v, axis=1) * (1 + idx[None, :, None, None, None])  # window-dependent
    out = np.asarray(windowed(fn, x, ContextOptions(length, stride, weighting)))
    xs = np.asarray(x)
    acc = np.zeros_like(xs)
    norm = np.zeros(frames)
    w = window_weights(length, weighting)
    for idx in context_windows(frames, length, stride):
        pred = np.cumsum(xs[:, idx], axis=1) * (1 + idx[None, :, None, None, None])
        acc[:, idx] += pred * w[None, :, None, None, None]
        norm[idx] += w
    np.testing.assert_allclose(out, acc / norm[None, :, None, None, None], rtol=1e-6, atol=1e-6)


def test_noise_rescheduling_repeats_first_window_shuffled():
    frames, length, stride = 24, 8, 4
    src = shuffled_noise_indices(frames, length, stride, seed=3)
    np.testing.assert_array_equal(src[:length], np.arange(length))
    assert src.max() < length
    for i in range(length, frames, stride):  # each block is a permutation of the block one window back
        assert sorted(src[i:i + stride].tolist()) == sorted(src[i - length:i - length + stride].tolist())
    assert not np.array_equal(src, shuffled_noise_indices(frames, length, stride, seed=4))
    noise = jax.random.normal(jax.random.PRNGKey(0), (1, frames, 2, 2, 4))
    out = np.asarray(reschedule_noise(noise, ContextOptions(length, stride), seed=3))
    np.testing.assert_array_equal(out, np.asarray(noise)[:, src])


def test_bad_options():
    with pytest.raises(ValueError, match="stride"):
        ContextOptions(length=4, stride=8)
    with pytest.raises(ValueError, match="weighting"):
        ContextOptions(weighting="gauss")
