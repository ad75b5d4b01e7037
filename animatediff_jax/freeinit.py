"""FreeInit (Wu et al. 2023): refine the initial noise of a video diffusion sampler.

After a full sampling pass, the clean latents are diffused back to t = T with the pass's own
initial noise; their low spatio-temporal frequencies are kept and the high frequencies are replaced
by fresh Gaussian noise (3D FFT over frames, height, width). The next pass starts from that mix.
The filters match the reference implementation (as in diffusers' FreeInitMixin).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


def reinitialize(x0: jax.Array, initial_noise: jax.Array, alpha_bar_T: float, key: jax.Array,
                 lowpass: jax.Array) -> jax.Array:
    """Noise for the next pass: diffuse x0 to t = T with `initial_noise`, keep its low frequencies,
    take the high ones from fresh noise drawn with `key`. All (B, F, h, w, c)."""
    z_T = jnp.sqrt(alpha_bar_T) * x0 + jnp.sqrt(1 - alpha_bar_T) * initial_noise
    fresh = jax.random.normal(key, x0.shape, jnp.float32)
    return mix_frequencies(z_T, fresh, lowpass)
