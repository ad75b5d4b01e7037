"""Sliding context windows over the frames (FreeNoise, Qiu et al. 2023) for videos longer than
the motion module's position encoding. Windows of `length` frames start every `stride` frames (the
last one aligned to the end so every frame is covered; `models/frame_windows.py`); where windows
overlap, results are averaged with per-position weights. Two scopes:

* "unet" (default; the context scheduling of the AnimateDiff community tools, e.g. animatediff-cli):
  the whole UNet call (with classifier-free guidance) runs on each window and each frame's
  prediction is the weighted mean over the windows that contain it (`windowed`). Windows run one
  after another in a `lax.scan`, so memory is that of one window; but every frame is computed in
  about length/stride windows (4 at 16/4), so a frame costs that many times the plain loop's.
* "motion" (FreeNoise's window-based attention fusion, as diffusers' `enable_free_noise`): the UNet
  runs once on all frames; only the motion modules' attentions run per window (their outputs fused
  with the weights), every frame-wise layer and the motion modules' feed-forward once per frame. A
  frame costs about what it costs in the plain loop; memory grows with the frames.
With `length >= frames` there is a single window and the model is called exactly as without context
windows, in either scope.

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

from animatediff_jax.models.frame_windows import WEIGHTINGS, context_windows, window_weights

SCOPES = ("unet", "motion")


@dataclass(frozen=True)
class ContextOptions:
    """Context-window settings. `length`: frames per window (≤ the motion module's position
    encoding length); `stride`: frames between window starts; `weighting`: how overlapping
    predictions are averaged; `shuffle_noise`: FreeNoise noise rescheduling of the initial noise;
    `scope`: what runs per window, "unet" or "motion" (module docstring). ValueError on bad values."""
    length: int = 16
    stride: int = 4
    weighting: Literal["uniform", "pyramid"] = "pyramid"
    shuffle_noise: bool = True
    scope: Literal["unet", "motion"] = "unet"

    def __post_init__(self):
        if self.length < 1 or self.stride < 1:
            raise ValueError(f"context length and stride must be positive, got {self.length}, {self.stride}")
        if self.stride > self.length:
            raise ValueError(f"context stride {self.stride} > length {self.length} would leave frames uncovered")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"context weighting must be 'uniform' or 'pyramid', got {self.weighting!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"context scope must be 'unet' or 'motion', got {self.scope!r}")

    def motion_window(self) -> tuple[int, int, str] | None:
        """(length, stride, weighting) for the motion modules' window fusion (scope "motion"), else None."""
        return (self.length, self.stride, self.weighting) if self.scope == "motion" else None


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
