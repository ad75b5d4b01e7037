"""Training the miniature's UNets with the project's training step (single device, in memory).

    trained, loss, seconds = fit(spec, trainable, frozen, batches, steps=1000, schedule="B")

The objective, noising, caption dropout, gradient clipping and AdamW update are those of
`animatediff_jax.training` (`make_loss_and_grads`, `make_train_step`, `make_optimizer`): the
trainable subtree is differentiated, the frozen UNet subtree, VAE and text encoder are not. What
this file adds is what the miniature needs and `train.py` (a sharded, checkpointed, config-driven
run over a converted SD1.x base) does not: start from our own in-memory weights, draw batches from
any function of the step (single frames, trigger captions, clips), and train LoRA factors through a
`transform` of the params (see `lora.py`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL, sample_latent
from animatediff_jax.outputs import atomic_path
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training.optimizer import make_optimizer
from animatediff_jax.training.step import ApplyFunctions, create_train_state, make_loss_and_grads, make_train_step
from animatediff_jax.xla_options import jit

Batches = Callable[[int], tuple[np.ndarray, list[str]]]  # step -> ((B, F, H, W, 3) uint8, captions)


@dataclass(frozen=True)
class Networks:
    """The configs of the three networks being trained against (and the motion module, if any)."""
    unet: UNetConfig
    motion: MotionConfig | None
    vae: VAEConfig
    text: CLIPTextConfig


def models(nets: Networks, transform: Callable[[dict], dict] | None = None) -> ApplyFunctions:
    """Pure apply functions (float32). `transform` maps the merged UNet params before apply."""
    unet = UNet3DConditionModel(nets.unet, nets.motion)
    vae = AutoencoderKL(nets.vae)
    text = CLIPTextModel(nets.text)

    def unet_fn(p, z, t, ctx):
        return unet.apply({"params": transform(p) if transform else p}, z, t, ctx)

    def encode_video(p, video, rng):  # (B, F, H, W, 3) uint8 -> (B, F, h, w, c) scaled latent sample
        b, f = video.shape[:2]
        x = video.reshape((b * f,) + video.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        mean, logvar = vae.apply({"params": p}, x, method=AutoencoderKL.encode)
        z = sample_latent(rng, mean, logvar) * nets.vae.scaling_factor
        return z.reshape((b, f) + z.shape[1:])

    def encode_text(p, ids):
        return text.apply({"params": p}, ids).last_hidden_state

    return ApplyFunctions(unet_fn, encode_video, encode_text)


def fit(nets: Networks, trainable: dict, frozen: dict, batches: Batches, tokenizer, *, steps: int,
        schedule: str, learning_rate: float, seed: int, name: str,
        transform: Callable[[dict], dict] | None = None, warmup: int = 50,
        log_every: int = 100, checkpoint: Callable[[int, dict], None] | None = None,
        checkpoint_every: int = 0, resume: str | None = None,
        starting: Callable[[], None] | None = None) -> tuple[dict, float, float]:
    """Train `trainable` (a UNet subtree, or LoRA factors with `transform`) for `steps` AdamW steps.

    frozen = {'unet': the rest of the UNet params, 'vae': ..., 'text_encoder': ...}. Noise schedule
    `schedule` is A, B or C; 10% of captions are dropped (classifier-free guidance), gradients
    clipped at norm 1, cosine learning-rate decay after `warmup` steps. Every `checkpoint_every`
    steps (0: never) `checkpoint(step, params as numpy)` is called and, with `resume` (a file path),
    the whole training state (step, params, optimizer state, PRNG key, losses so far) is written
    there; a later call with the same settings continues from that file instead of from step 0 and
    ends where an uninterrupted run would have (batches are a function of the step). The file is
    removed once training ends. `starting()` is called when training starts at step 0 (not resumed). Returns (params as numpy, mean loss of the last 10% of steps, seconds
    spent training: every part of a resumed run, compilation included).
    """
    optimizer = make_optimizer(learning_rate, adam_weight_decay=1e-2, max_grad_norm=1.0,
                               lr_scheduler="cosine", lr_warmup_steps=min(warmup, steps // 2),
                               max_train_steps=steps)
    null_ids = jnp.asarray(tokenizer([""])[0])
    loss_and_grads = make_loss_and_grads(models(nets, transform), NoiseSchedule.preset(schedule).alphas_cumprod,
                                         null_ids, null_text_ratio=0.1)
    step_fn = jit(make_train_step(loss_and_grads, optimizer), donate_argnums=0)
    state = create_train_state(jax.tree.map(jnp.asarray, trainable), optimizer, seed)
    settings = {"name": name, "steps": steps, "schedule": schedule, "learning_rate": learning_rate, "seed": seed}
    state, losses, before = resume_state(resume, state, settings) if resume else (state, [], 0.0)
    if starting is not None and int(state.step) == 0:
        starting()
    frozen = jax.tree.map(jnp.asarray, frozen)
    start = time.time() - before
    for step in range(int(state.step), steps):
        video, captions = batches(step)
        state, metrics = step_fn(state, frozen, {"video": video, "input_ids": tokenizer(captions)})
        losses.append(metrics["loss"])
        if step == 0 or (step + 1) % log_every == 0 or step == steps - 1:
            if not bool(metrics["finite"]):
                raise FloatingPointError(f"{name}: non-finite loss at step {step + 1}")
            recent = float(np.mean(jax.device_get(losses[-log_every:])))
            print(f"  {name} step {step + 1:5d}/{steps}  loss {recent:.4f}  ({time.time() - start:.0f}s)",
                  flush=True)
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step < steps - 1:
            if checkpoint is not None:
                checkpoint(step + 1, jax.tree.map(np.asarray, jax.device_get(state.params)))
            if resume:
                save_resume_state(resume, state, settings, losses, time.time() - start)
    if resume and os.path.exists(resume):
        os.remove(resume)
    tail = jax.device_get(losses[-max(steps // 10, 1):])
    return jax.tree.map(np.asarray, jax.device_get(state.params)), float(np.mean(tail)), time.time() - start


def save_resume_state(path: str, state, settings: dict, losses: list, seconds: float) -> None:
    """Write the training state, the run's settings, its losses and the seconds spent so far to `path`
    (msgpack, atomic)."""
    record = {"settings": settings, "losses": np.asarray(jax.device_get(losses), np.float32),
              "seconds": float(seconds), "state": serialization.to_state_dict(jax.device_get(state))}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(serialization.msgpack_serialize(record))


def resume_state(path: str, fresh, settings: dict) -> tuple[object, list, float]:
    """(state, losses, seconds spent) from `path` if it holds a run with the same `settings`, else
    (`fresh`, [], 0). A file of other settings, or one that cannot be read, is set aside with one line
    saying why. Files written before the seconds were recorded count as 0 s."""
    if not os.path.exists(path):
        return fresh, [], 0.0
    try:
        with open(path, "rb") as f:
            record = serialization.msgpack_restore(f.read())
        if record["settings"] != settings:
            raise ValueError(f"it is of another run ({record['settings']}, this one is {settings})")
        state = serialization.from_state_dict(fresh, record["state"])
    except (OSError, ValueError, KeyError, TypeError) as e:  # msgpack's errors are ValueErrors
        print(f"  {settings['name']}: not resuming from {path}: {e}; starting at step 0", flush=True)
        return fresh, [], 0.0
    print(f"  {settings['name']}: resuming at step {int(state.step)} from {path}", flush=True)
    return state, [jnp.float32(x) for x in record["losses"]], float(record.get("seconds", 0.0))
