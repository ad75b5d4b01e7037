"""Sliding context windows over the frames (FreeNoise, Qiu et al. 2023) for videos longer than
the motion module's position encoding.

The whole UNet call (with classifier-free guidance) runs on windows of `length` frames that start
every `stride` frames (the last window is aligned to the end so every frame is covered); each
frame's prediction is the weighted mean over the windows that contain it. Windows run one after
another in a `lax.scan`, so memory is that of one window and time grows linearly with the number
of frames. With `length >= frames` there is a single window and the model is called exactly as
without context windows.

FreeNoise's noise rescheduling: frames beyond the first window reuse the first window's noise,
shuffled within blocks of `stride` frames, so distant windows start from correlated noise
(the "shuffle_context" scheme of diffusers' FreeNoise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class ContextOptions:
    """Context-window settings. `length`: frames per window (≤ the motion module's position
    encoding length); `stride`: frames between window starts; `weighting`: how overlapping
    predictions are averaged; `shuffle_noise`: FreeNoise noise rescheduling of the initial noise."""
    length: int = 16
    stride: int = 4
    weighting: Literal["uniform", "pyramid"] = "pyramid"
    shuffle_noise: bool = True

    def __post_init__(self):
        if self.length < 1 or self.stride < 1:
            raise ValueError(f"context length and stride must be positive, got {self.length}, {self.stride}")
        if self.stride > self.length:
            raise ValueError(f"context stride {self.stride} > length {self.length} would leave frames uncovered")
        if self.weighting not in ("uniform", "pyramid"):
            raise ValueError(f"context weighting must be 'uniform' or 'pyramid', got {self.weighting!r}")


def context_windows(num_frames: int, length: int, stride: int) -> np.ndarray:
    """Frame indices of each window, (num_windows, min(length, num_frames)) int32."""
    if length >= num_frames:
        return np.arange(num_frames, dtype=np.int32)[None]
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return np.stack([np.arange(s, s + length, dtype=np.int32) for s in starts])


def window_weights(length: int, weighting: str) -> np.ndarray:
    """Per-frame weight inside a window: uniform ones, or FreeNoise's pyramid (1, 2, .., 2, 1)."""
    if weighting == "uniform":
        return np.ones(length, np.float32)
    half = np.arange(1, (length + 1) // 2 + 1, dtype=np.float32)
    return np.concatenate([half, half[: length // 2][::-1]])


def shuffled_noise_indices(num_frames: int, length: int, stride: int, seed: int) -> np.ndarray:
    """Source frame (in [0, length)) of each frame's initial noise, (num_frames,) int32.

    Frame j ≥ length takes the noise of frame j − length after a random permutation within its
    block of `stride` frames, applied block by block as FreeNoise does.
    """
    src = np.arange(num_frames, dtype=np.int32)
    rng = np.random.default_rng(seed)
    for i in range(length, num_frames, stride):
        block = np.arange(i - length, min(i - length + stride, num_frames))
        perm = block[rng.permutation(len(block))]
        n = min(num_frames, i + len(block)) - i
        src[i:i + n] = src[perm[:n]]
    return src


def reschedule_noise(noise: jax.Array, opts: ContextOptions, seed: int) -> jax.Array:
    """FreeNoise initial noise from i.i.d. noise (B, F, h, w, c): repeats of its first window."""
    num_frames = noise.shape[1]
    if not opts.shuffle_noise or opts.length >= num_frames:
        return noise
    return jnp.take(noise, jnp.asarray(shuffled_noise_indices(num_frames, opts.length, opts.stride, seed)),
                    axis=1)


def windowed(model_fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array,
             opts: ContextOptions) -> jax.Array:
    """Apply `model_fn(x_window, frame_indices) -> prediction` over context windows of x.

    x: (B, F, h, w, c). `frame_indices` (L,) tells the model which frames it sees (e.g. for
    per-frame prompt embeddings). Returns the weighted per-frame mean, same shape as x.
    """
    num_frames = x.shape[1]
    windows = context_windows(num_frames, opts.length, opts.stride)
    if windows.shape[0] == 1:  # one window holding every frame: the plain call
        return model_fn(x, jnp.asarray(windows[0]))
    w = jnp.asarray(window_weights(windows.shape[1], opts.weighting))

    def body(carry, idx):
        acc, norm = carry
        out = model_fn(jnp.take(x, idx, axis=1), idx)
        wb = w.astype(out.dtype)[None, :, None, None, None]
        acc = acc.at[:, idx].add((out * wb).astype(acc.dtype))
        norm = norm.at[idx].add(w)
        return (acc, norm), None

    acc0 = jnp.zeros(x.shape, jnp.float32)
    (acc, norm), _ = jax.lax.scan(body, (acc0, jnp.zeros((num_frames,), jnp.float32)), jnp.asarray(windows))
    return (acc / norm[None, :, None, None, None]).astype(x.dtype)
