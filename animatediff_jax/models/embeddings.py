"""Sinusoidal embeddings: the diffusion timestep embedding and the motion module's frame-position encoding."""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from animatediff_jax.models.resnet import activation


def timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool = False, freq_shift: float = 1.0,
                       scale: float = 1.0, max_period: int = 10000):
    """(N,) timesteps -> (N, dim) float32 [sin | cos] (or [cos | sin]) features, as diffusers'
    `get_timestep_embedding`: frequency k is exp(-ln(max_period) * k / (dim/2 - freq_shift))."""
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D, got shape {timesteps.shape}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = scale * timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """(length, dim) float32 position encoding of Vaswani et al.: sin at even, cos at odd channels.
    Computed with numpy: a constant of the traced program, and no small XLA programs compiled when
    exporters and converters write or check a `pe` buffer outside any trace."""
    position = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div[: dim // 2])
    return pe


class TimestepEmbedding(nn.Module):
    """linear_1 -> act -> linear_2 (diffusers TimestepEmbedding)."""
    time_embed_dim: int
    act_fn: str = "silu"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Dense(self.time_embed_dim, name="linear_1", **kw)(x)
        return nn.Dense(self.time_embed_dim, name="linear_2", **kw)(activation(self.act_fn)(x))
