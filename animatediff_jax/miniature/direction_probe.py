"""The direction probe's work (CLI: `miniature/probe.py`): pooled features at every motion-module input
of the frozen base and a held-out ridge classifier of the caption's direction on them; and how much
base + motion module's denoising relies on the caption's direction, its other words, or neither."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.miniature import stages, world
from animatediff_jax.miniature.trainer import models
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.params import flatten
from animatediff_jax.schedules import NoiseSchedule, add_noise
from animatediff_jax.xla_options import jit

PROBE_SEED = 777  # a dataset seed no stage trains on
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# Timesteps of DDIM's 25-step sampling (leading spacing, offset 1) from its first on: the layout and
# the direction of motion are settled in the first few.
TIMESTEPS = (961, 921, 881, 801, 601, 401, 201)
CAPTIONS = ("caption", "opposite direction", "empty caption")


def pooled_features(weights: str, clips: int, batch: int = 8, seed: int = 0) -> tuple[dict, np.ndarray]:
    """({transformer path: (clips, C) pooled outputs}, (clips,) caption directions)."""
    nets, base = stages.networks(weights, None)
    tokenizer, fns = stages.tokenizer(weights), models(nets)
    unet = UNet3DConditionModel(nets.unet, None)
    alphas_cumprod = NoiseSchedule.preset("B").alphas_cumprod

    @jit
    def features(video, ids, t, key):
        k_vae, k_noise = jax.random.split(key)
        z = fns.encode_video(base["vae"], video, k_vae)
        z = add_noise(alphas_cumprod, z, jax.random.normal(k_noise, z.shape), t)
        ctx = fns.encode_text(base["text_encoder"], ids)
        _, state = unet.apply({"params": base["unet"]}, z, t, ctx, mutable=["intermediates"],
                              capture_intermediates=lambda m, _: bool(m.name) and m.name.startswith("attentions"))
        return jax.tree.map(lambda x: x.reshape(video.shape[0], -1, x.shape[-1]).mean(1), state["intermediates"])

    rng = np.random.default_rng(seed)
    pooled, labels = {}, []
    for first in range(0, clips, batch):
        count = min(batch, clips - first)
        video, captions = world.clips(PROBE_SEED, first, count)
        directions = [str(d) for d in rng.choice(procedural.DIRECTIONS, count)]
        captions = [" ".join(c.split()[:-1] + [d]) for c, d in zip(captions, directions)]
        t = jnp.asarray(rng.integers(0, len(alphas_cumprod), count))
        out = features(video, jnp.asarray(tokenizer(captions)), t, jax.random.key(first // batch))
        for path, x in flatten(jax.device_get(out)).items():
            pooled.setdefault("/".join(p for p in path if p != "__call__"), []).append(np.asarray(x[0]))
        labels += directions
    return {k: np.concatenate(v) for k, v in pooled.items()}, np.asarray(labels)


def probe_accuracy(x: np.ndarray, labels: np.ndarray, ridge: float = 10.0) -> float:
    """Held-out accuracy (last quarter) of a standardised ridge one-vs-rest classifier."""
    train = np.arange(len(labels)) < len(labels) * 3 // 4
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    classes = np.asarray(procedural.DIRECTIONS)
    y = (labels[:, None] == classes[None]).astype(np.float64)
    w = np.linalg.solve(x[train].T @ x[train] + ridge * np.eye(x.shape[1]), x[train].T @ y[train])
    return float(np.mean(classes[(x[~train] @ w).argmax(1)] == labels[~train]))


def opposite_direction(caption: str) -> str:
    """The caption with its direction word replaced by the opposite one ("a red circle moving left"
    -> "... moving right"); captions without one are returned unchanged."""
    return " ".join(OPPOSITE.get(w, w) for w in caption.split(" "))


def caption_dependence(weights: str, schedule: str = "B", clips: int = 64, batch: int = 16,
                       timesteps: tuple[int, ...] = TIMESTEPS) -> dict[int, dict[str, float]]:
    """{t: {caption variant: mean squared error of the predicted clean latents}} of base + the motion
    module of `schedule` under `weights`, on `clips` dataset clips (PROBE_SEED) noised to each t.

    Each clip is denoised three times from the same z_t, with its own caption, with the direction word
    replaced by the opposite one, and with the empty caption (CAPTIONS); the error is that of
    x0 = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t) against the clip's latents (the same ratio
    between variants as the epsilon MSE the module was trained on, per t). A module that draws the
    captioned direction does worse with the opposite one at the timesteps where sampling settles the
    layout. Raises InputError naming a missing or damaged file."""
    nets, base = stages.networks_with_module(weights, schedule)
    unet_params = base["unet"]
    tokenizer, fns = stages.tokenizer(weights), models(nets)
    alphas_cumprod = jnp.asarray(NoiseSchedule.preset(schedule).alphas_cumprod)

    @jit
    def errors(video, ids, t, key):  # ids (variants, B, L) -> (variants, B)
        k_vae, k_noise = jax.random.split(key)
        z = fns.encode_video(base["vae"], video, k_vae)
        noise = jax.random.normal(k_noise, z.shape)
        z_t = add_noise(alphas_cumprod, z, noise, t)
        abar = alphas_cumprod[t][:, None, None, None, None]

        def error(variant_ids):
            eps = fns.unet(unet_params, z_t, t, fns.encode_text(base["text_encoder"], variant_ids))
            x0 = (z_t - jnp.sqrt(1 - abar) * eps) / jnp.sqrt(abar)
            return jnp.mean(jnp.square(x0 - z), axis=(1, 2, 3, 4))
        return jax.lax.map(error, ids)

    totals = {t: np.zeros(len(CAPTIONS)) for t in timesteps}
    for first in range(0, clips, batch):
        count = min(batch, clips - first)
        video, captions = world.clips(PROBE_SEED, first, count)
        ids = jnp.stack([jnp.asarray(tokenizer(c)) for c in
                         (captions, [opposite_direction(c) for c in captions], [""] * count)])
        for t in timesteps:
            out = errors(video, ids, jnp.full((count,), t, jnp.int32), jax.random.key(first))
            totals[t] += np.asarray(out).sum(axis=1)
    return {t: dict(zip(CAPTIONS, (totals[t] / clips).tolist())) for t in timesteps}
