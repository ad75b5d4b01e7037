"""Fine-tuning the miniature's VAE decoder on the base UNet's denoised latents.

The decoder is first trained on the encoder's latents of real images (`autoencoder.py`). What it
decodes at sampling time are the base UNet's denoised latents, which are not quite those: in the
miniature the background's texture lives inside each latent pixel, so a plain background the UNet
draws a little off the encoder's plain latents decoded as stripes (the decoder was trained on all
four styles) — in about one frame in five of base + module's videos, switching from frame to frame
(RESULTS.md before this stage: domain fidelity 79%, dataset clips 94%).

Here the decoder (and post_quant_conv; the encoder, hence every latent the UNets were trained on, stays
as it is) learns to map what the base makes of a real frame back to that frame: each batch holds
`batch` frames of plain clips with their captions, encoded, noised to a timestep drawn uniformly from
[0, max_timestep) of the base's training schedule (A) and denoised in one step by the base UNet
(x0 = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)); and `batch` images of the four styles with their
posterior samples, so every style's reconstruction stays what it was. Same pixel losses and object
weighting as the autoencoder's training. Measured on the shipped weights, 500 steps (`evaluate`, 32
samples per row, 2026-12-03): base + module's domain fidelity 79% before, 85% with max_timestep 300,
92% with 600, 94% with 1000 (the default; the dataset clips' own 94%), the other rows within a point
of before (DreamBooth + module 96% with its own VAE, LoRA + module 99%, shapes through the VAE 66-78%).
A DreamBooth decoding with this decoder lost its stripes (96% -> 71%): it keeps the VAE it was trained
with (the build runs this stage after the DreamBooth's).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from animatediff_jax.miniature import world
from animatediff_jax.miniature.autoencoder import DECODER, image_batch, pixel_weights, reconstruction_losses, vae_optimizer
from animatediff_jax.miniature.trainer import Networks, models
from animatediff_jax.models.vae import AutoencoderKL, sample_latent
from animatediff_jax.schedules import NoiseSchedule, add_noise
from animatediff_jax.xla_options import jit

def denoised_latents(nets: Networks, params: dict, frames: jax.Array, input_ids: jax.Array, key: jax.Array,
                     max_timestep: int, schedule: str = "A") -> jax.Array:
    """The base UNet's one-step denoised latents x0 (B, h, w, c), scaled, of `frames` (B, H, W, 3) in
    [-1, 1] captioned by `input_ids` (B, tokens): each frame's posterior sample noised to its own
    timestep in [0, max_timestep) of noise schedule `schedule`. params: {'unet', 'vae', 'text_encoder'}."""
    fns, vae = models(nets), AutoencoderKL(nets.vae)
    abar = jnp.asarray(NoiseSchedule.preset(schedule).alphas_cumprod)
    k_posterior, k_t, k_noise = jax.random.split(key, 3)
    mean, logvar = vae.apply({"params": params["vae"]}, frames, method=AutoencoderKL.encode)
    z = sample_latent(k_posterior, mean, logvar) * nets.vae.scaling_factor
    t = jax.random.randint(k_t, (frames.shape[0],), 0, max_timestep)
    z_t = add_noise(abar, z, jax.random.normal(k_noise, z.shape), t)
    eps = fns.unet(params["unet"], z_t[:, None], t, fns.encode_text(params["text_encoder"], input_ids))[:, 0]
    a = abar[t][:, None, None, None]
    return (z_t - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def train_denoised_decoder(nets: Networks, params: dict, tokenizer, steps: int, batch: int = 16,
                           learning_rate: float = 5e-4, max_timestep: int = 1000, object_weight: float = 4.0,
                           seed: int = 0, data_seed: int = 0, log_every: int = 100) -> tuple[dict, dict]:
    """Fine-tune the decoder of `params['vae']` (see the module docstring) for `steps` AdamW steps.
    params: {'unet', 'vae', 'text_encoder'} of the base. Returns (the VAE's params, final metrics);
    FloatingPointError when the loss is not finite at a logged step or the last."""
    vae, scale = AutoencoderKL(nets.vae), nets.vae.scaling_factor
    frozen = {k: v for k, v in params["vae"].items() if k not in DECODER}
    trainable = {k: params["vae"][k] for k in DECODER}
    optimizer = vae_optimizer(learning_rate, steps)
    opt_state = optimizer.init(trainable)

    def loss_fn(p, images, latents, w):
        recon = vae.apply({"params": {**frozen, **p}}, latents / scale, method=AutoencoderKL.decode)
        l1, mse = reconstruction_losses(recon, images, w)
        return l1 + mse, {"l1": l1, "mse": mse}

    @jit
    def step_fn(p, o, frames, input_ids, images, w, key):
        k_denoised, k_posterior = jax.random.split(key)
        denoised = denoised_latents(nets, params, frames, input_ids, k_denoised, max_timestep)
        mean, logvar = vae.apply({"params": params["vae"]}, images, method=AutoencoderKL.encode)
        encoded = sample_latent(k_posterior, mean, logvar) * scale
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            p, jnp.concatenate([frames, images]), jnp.concatenate([denoised, encoded]), w)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o, {"loss": loss, **aux}

    key, start, metrics = jax.random.PRNGKey(seed), time.time(), {}
    for step in range(steps):
        clips, captions = world.clip_frames(data_seed, step * batch, batch)
        frames = clips[:, 0].astype(np.float32) / 127.5 - 1.0
        images = image_batch(data_seed + 1, step, batch, nets.vae.sample_size, ("stripes", "checker", "dots", "plain"))
        key, sub = jax.random.split(key)
        trainable, opt_state, metrics = step_fn(trainable, opt_state, frames, np.asarray(tokenizer(captions)), images,
                                                pixel_weights(np.concatenate([frames, images]), object_weight), sub)
        if step == steps - 1 or log_every and step % log_every == 0:
            m = {k: float(v) for k, v in metrics.items()}
            if not np.isfinite(m["loss"]):  # as the UNet stages' `trainer.fit`: nothing non-finite is saved
                raise FloatingPointError(f"decoder: non-finite loss at step {step + 1}")
            print(f"  decoder step {step:5d}/{steps}  loss {m['loss']:.4f}  l1 {m['l1']:.4f}"
                  f"  ({time.time() - start:.0f}s)", flush=True)
    return {**frozen, **trainable}, {k: float(v) for k, v in metrics.items()}
