"""Training the miniature's AutoencoderKL on frames of the procedural world.

Loss: L1 + MSE reconstruction of the posterior sample's decoding, plus a small KL term to keep the
latent space smooth (SD's VAE uses a KL weight of 1e-6 with perceptual and adversarial terms; here
the images are simple enough for pixel losses alone). The object's pixels (`scoring.object_mask`,
~5% of a frame) weigh `object_weight` times a background pixel's, as a perceptual loss would weigh
what an image shows: with equal weights 1000 steps left colour at 84% and shape at 44% on plain
images (RESULTS.md, 2026-12-01); weighted (4), 1500 steps gave 100% and 61-68% (evaluate's VAE rows).
The latent scaling factor is measured at the end as 1 / std of the latents, the way SD's 0.18215 was
chosen.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from animatediff_jax.data import procedural
from animatediff_jax.miniature.scoring import object_mask
from animatediff_jax.models.configs import VAEConfig
from animatediff_jax.models.vae import AutoencoderKL, sample_latent
from animatediff_jax.xla_options import jit


def image_batch(seed: int, step: int, batch: int, size: int, styles: tuple[str, ...]) -> np.ndarray:
    """(batch, size, size, 3) float32 in [-1, 1]: world images of every style, deterministic."""
    imgs = [procedural.generate_image(seed, step * batch + i, size=size, style=styles[(step * batch + i) % len(styles)])[0]
            for i in range(batch)]
    return np.stack(imgs).astype(np.float32) / 127.5 - 1.0


def pixel_weights(images: np.ndarray, object_weight: float) -> np.ndarray:
    """(B, H, W, 1) float32 loss weights of `images` (B, H, W, 3) in [-1, 1]: `object_weight` on the
    object's pixels, 1 elsewhere, scaled to mean 1."""
    w = 1.0 + (object_weight - 1.0) * object_mask(images / 2.0 + 0.5)[..., None]
    return (w / w.mean()).astype(np.float32)


DECODER = ("decoder", "post_quant_conv")  # the VAE's subtrees that decode (trained alone: the latents stay)


def vae_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """AdamW (weight decay 1e-4), gradients clipped at norm 1, cosine decay to 5% of `learning_rate` over
    `steps`: the autoencoder's training and every decoder fine-tune."""
    schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))


def reconstruction_losses(recon: jax.Array, images: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(L1, MSE) of `recon` against `images` (B, H, W, 3), each pixel weighted by `w` (B, H, W, 1)."""
    return (w * jnp.abs(recon - images)).mean(), (w * jnp.square(recon - images)).mean()


def train_autoencoder(config: VAEConfig, steps: int, batch: int = 32, learning_rate: float = 1e-3,
                      kl_weight: float = 1e-4, object_weight: float = 4.0, seed: int = 0, log_every: int = 100,
                      styles: tuple[str, ...] = procedural.STYLES, params: dict | None = None,
                      trainable: tuple[str, ...] | None = None) -> tuple[VAEConfig, dict, dict]:
    """Train from scratch (or from `params`); returns (config with measured scaling_factor, params,
    final metrics). `trainable`: top-level subtrees that train (e.g. ("decoder", "post_quant_conv")
    to sharpen the decoder while every latent stays what it was: `DECODER`); default all."""
    vae = AutoencoderKL(config)
    size = config.sample_size
    if params is None:
        params = vae.init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))["params"]
    names = tuple(trainable or params)
    frozen = {k: v for k, v in params.items() if k not in names}
    params = {k: params[k] for k in names}
    optimizer = vae_optimizer(learning_rate, steps)
    opt_state = optimizer.init(params)

    def loss_fn(p, x, w, key):
        p = {**frozen, **p}
        mean, logvar = vae.apply({"params": p}, x, method=AutoencoderKL.encode)
        z = sample_latent(key, mean, logvar)
        recon = vae.apply({"params": p}, z, method=AutoencoderKL.decode)
        l1, mse = reconstruction_losses(recon, x, w)
        kl = 0.5 * jnp.mean(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
        return l1 + mse + kl_weight * kl, {"l1": l1, "mse": mse, "kl": kl}

    @jit
    def step_fn(p, o, x, w, key):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, w, key)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, {"loss": loss, **aux}

    key = jax.random.PRNGKey(seed + 1)
    start, metrics = time.time(), {}
    for step in range(steps):
        key, sub = jax.random.split(key)
        x = image_batch(seed, step, batch, size, styles)
        params, opt_state, metrics = step_fn(params, opt_state, x, pixel_weights(x, object_weight), sub)
        if log_every and (step % log_every == 0 or step == steps - 1):
            m = {k: float(v) for k, v in metrics.items()}
            print(f"  vae step {step:5d}/{steps}  loss {m['loss']:.4f}  l1 {m['l1']:.4f}  kl {m['kl']:.2f}"
                  f"  ({time.time() - start:.0f}s)", flush=True)
    params = {**frozen, **params}
    # Scaling factor: unit variance of the (unscaled) posterior means over held-out images.
    held_out = image_batch(seed + 7, 0, 256, size, styles)
    mean, _ = jit(lambda p, x: vae.apply({"params": p}, x, method=AutoencoderKL.encode))(params, held_out)
    scale = float(1.0 / np.std(np.asarray(mean)))
    return dataclasses.replace(config, scaling_factor=round(scale, 5)), params, {k: float(v) for k, v in metrics.items()}
