"""FreeInit (Wu et al. 2023): refine the initial noise of a video diffusion sampler.

After a full sampling pass, the clean latents are diffused back to the pass's first timestep
(t = T; with video-to-video, the strength's timestep) with the pass's own initial noise; their low
spatio-temporal frequencies are kept and the high frequencies are replaced by those of a fresh
start (fresh Gaussian noise; with video-to-video, the input video noised with fresh noise), by a 3D
FFT over frames, height, width. The next pass starts from that mix.
The filters match the reference implementation (as in diffusers' FreeInitMixin).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class FreeInitOptions:
    """`iterations`: total sampling passes (1 = FreeInit off); `method`: low-pass filter;
    `spatial_stop` / `temporal_stop`: normalised stop frequencies d_s, d_t; `order`: Butterworth order."""
    iterations: int = 3
    method: Literal["butterworth", "gaussian", "ideal"] = "butterworth"
    order: int = 4
    spatial_stop: float = 0.25
    temporal_stop: float = 0.25

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"FreeInit iterations must be ≥ 1, got {self.iterations}")
        if self.method not in ("butterworth", "gaussian", "ideal"):
            raise ValueError(f"FreeInit method must be butterworth, gaussian or ideal, got {self.method!r}")
        if not (0 <= self.spatial_stop <= 1 and 0 <= self.temporal_stop <= 1):
            raise ValueError("FreeInit stop frequencies must lie in [0, 1]")


def lowpass_filter(frames: int, height: int, width: int, opts: FreeInitOptions) -> np.ndarray:
    """Low-pass mask over the (fft-shifted) 3D frequency grid, (frames, height, width) float32."""
    if opts.spatial_stop == 0 or opts.temporal_stop == 0:
        return np.zeros((frames, height, width), np.float32)
    t = (2 * np.arange(frames) / frames - 1) * (opts.spatial_stop / opts.temporal_stop)
    h = 2 * np.arange(height) / height - 1
    w = 2 * np.arange(width) / width - 1
    d2 = t[:, None, None] ** 2 + h[None, :, None] ** 2 + w[None, None, :] ** 2
    ds = opts.spatial_stop
    if opts.method == "butterworth":
        mask = 1 / (1 + (d2 / ds**2) ** opts.order)
    elif opts.method == "gaussian":
        mask = np.exp(-d2 / (2 * ds**2))
    else:
        mask = (d2 <= ds * 2).astype(np.float64)
    return mask.astype(np.float32)


def mix_frequencies(x: jax.Array, noise: jax.Array, lowpass: jax.Array) -> jax.Array:
    """Low frequencies of x plus high frequencies of noise. x, noise: (B, F, h, w, c); lowpass (F, h, w)."""
    axes = (1, 2, 3)
    lp = lowpass[None, :, :, :, None]
    xf = jnp.fft.fftshift(jnp.fft.fftn(x.astype(jnp.float32), axes=axes), axes=axes)
    nf = jnp.fft.fftshift(jnp.fft.fftn(noise.astype(jnp.float32), axes=axes), axes=axes)
    mixed = xf * lp + nf * (1 - lp)
    return jnp.fft.ifftn(jnp.fft.ifftshift(mixed, axes=axes), axes=axes).real.astype(x.dtype)


def reinitialize(x0: jax.Array, initial_noise: jax.Array, fresh_start: jax.Array, lowpass: jax.Array,
                 diffuse: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """Start latents of the next pass, all (B, F, h, w, c).

    Low frequencies: `diffuse(x0, initial_noise)`, the finished pass's clean latents noised back to
    the pass's first timestep with the pass's own initial noise. High frequencies: `fresh_start`,
    what a new start of the pass would be (fresh Gaussian noise for text-to-video; for
    video-to-video the input video's latents noised to the strength's timestep with fresh noise).
    """
    return mix_frequencies(diffuse(x0, initial_noise), fresh_start, lowpass)
