"""Sliding context windows (FreeNoise): coverage, weighting, exactness, noise rescheduling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.models.attention import Attention
from animatediff_jax.models.configs import MotionConfig
from animatediff_jax.models.embeddings import sinusoidal_positions
from animatediff_jax.models.frame_windows import context_windows, window_weights
from animatediff_jax.models.motion_module import MotionModule, TemporalTransformerBlock
from animatediff_jax.models.transformer_2d import FeedForward, layer_norm
from animatediff_jax.sampling.context_windows import (ContextOptions, reschedule_noise, shuffled_noise_indices,
                                                      windowed)


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
    with pytest.raises(ValueError, match="scope"):
        ContextOptions(scope="spatial")


def _block_reference(params, x, windows, weights, heads, max_seq_length):
    """FreeNoise's attention fusion written out: both attentions per window (positions from 0),
    the weighted mean over every window holding a frame, then the feed-forward on every frame."""
    n, frames, c = x.shape
    ln = lambda name, h: layer_norm(name, 1e-5, jnp.float32, jnp.float32).apply({"params": params[name]}, h)
    acc, total = np.zeros((n, frames, c)), np.zeros(frames)
    for idx in windows:
        h = x[:, idx]
        pe = sinusoidal_positions(max_seq_length, c)[:len(idx)]
        for i in (1, 2):
            h = h + Attention(heads, c // heads).apply({"params": params[f"attn{i}"]}, ln(f"norm{i}", h) + pe)
        acc[:, idx] += np.asarray(h) * weights[None, :, None]
        total[idx] += weights
    fused = jnp.asarray(acc / total[None, :, None], jnp.float32)
    return fused + FeedForward().apply({"params": params["ff"]}, ln("norm3", fused))


@pytest.mark.parametrize("frames,length,stride,weighting", [(11, 4, 3, "pyramid"), (8, 4, 2, "uniform")])
def test_motion_window_fusion_matches_its_definition(frames, length, stride, weighting):
    x = jax.random.normal(jax.random.PRNGKey(2), (3, frames, 16))
    block = TemporalTransformerBlock(heads=2, max_seq_length=8, window=(length, stride, weighting))
    params = block.init(jax.random.PRNGKey(3), x)["params"]
    want = _block_reference(params, x, context_windows(frames, length, stride), window_weights(length, weighting),
                            heads=2, max_seq_length=8)
    np.testing.assert_allclose(np.asarray(block.apply({"params": params}, x)), np.asarray(want), rtol=1e-5, atol=1e-5)
    plain = TemporalTransformerBlock(heads=2, max_seq_length=frames).apply({"params": params}, x)
    assert np.abs(np.asarray(plain) - np.asarray(want)).max() > 1e-3  # windows change the result


def test_one_motion_window_is_the_plain_block_exactly():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 6, 16))
    plain = TemporalTransformerBlock(heads=2, max_seq_length=8)
    params = plain.init(jax.random.PRNGKey(5), x)["params"]
    one = TemporalTransformerBlock(heads=2, max_seq_length=8, window=(8, 4, "pyramid"))
    np.testing.assert_array_equal(np.asarray(one.apply({"params": params}, x)),
                                  np.asarray(plain.apply({"params": params}, x)))


def test_motion_windows_take_more_frames_than_the_position_encoding():
    cfg = MotionConfig(num_attention_heads=2, max_seq_length=4, norm_num_groups=4)
    x = jax.random.normal(jax.random.PRNGKey(6), (1, 10, 2, 2, 8))
    params = MotionModule(cfg, window=(4, 2, "pyramid")).init(jax.random.PRNGKey(7), x)["params"]
    assert MotionModule(cfg, window=(4, 2, "pyramid")).apply({"params": params}, x).shape == x.shape
    with pytest.raises(ValueError, match="10 frames exceed"):
        MotionModule(cfg).apply({"params": params}, x)
    with pytest.raises(ValueError, match="6 frames exceed"):
        MotionModule(cfg, window=(6, 2, "pyramid")).apply({"params": params}, x)
