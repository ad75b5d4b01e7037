"""The diffusion training objective of AnimateDiff (DDPM epsilon-prediction MSE; v-prediction option).

    t ~ U{0, T-1},  eps ~ N(0, I),  z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    loss = mean((unet(z_t, t, text) - target)^2),  target = eps  or  v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0

Noise and timesteps are drawn for the whole (global) batch at once, so splitting the batch into
micro-batches for gradient accumulation changes nothing but memory.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from animatediff_jax import schedules
from animatediff_jax.training.config import PREDICTION_TYPES


def sample_noise(rng: jax.Array, shape: tuple[int, ...], num_train_timesteps: int
                 ) -> tuple[jax.Array, jax.Array]:
    """(noise (B, ...) float32, timesteps (B,) int32) for a batch of latents of `shape`."""
    rng_noise, rng_t = jax.random.split(rng)
    noise = jax.random.normal(rng_noise, shape, jnp.float32)
    timesteps = jax.random.randint(rng_t, (shape[0],), 0, num_train_timesteps, jnp.int32)
    return noise, timesteps


def target(latents: jax.Array, noise: jax.Array, timesteps: jax.Array, alphas_cumprod: jax.Array,
           prediction_type: str) -> jax.Array:
    """What the UNet is trained to predict."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return schedules.velocity(alphas_cumprod, latents, noise, timesteps)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def mse(prediction: jax.Array, target_: jax.Array) -> jax.Array:
    """Mean squared error in float32 (prediction may be bfloat16)."""
    return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target_.astype(jnp.float32)))


def drop_captions(rng: jax.Array, input_ids: jax.Array, null_ids: jax.Array, ratio: float) -> jax.Array:
    """Replace each caption's token ids (B, L) by the empty caption's (L,) with probability `ratio`."""
    drop = jax.random.uniform(rng, (input_ids.shape[0], 1)) < ratio
    return jnp.where(drop, null_ids[None, :], input_ids)
