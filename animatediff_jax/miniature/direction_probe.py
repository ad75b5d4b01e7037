"""The direction probe's work: pooled features at every motion-module input of the frozen base,
and a held-out ridge classifier of the caption's direction on them (CLI: `miniature/probe.py`)."""
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
    for b in range(clips // batch):
        video, captions = world.clips(PROBE_SEED, b * batch, batch)
        directions = [str(d) for d in rng.choice(procedural.DIRECTIONS, batch)]
        captions = [" ".join(c.split()[:-1] + [d]) for c, d in zip(captions, directions)]
        t = jnp.asarray(rng.integers(0, len(alphas_cumprod), batch))
        out = features(video, jnp.asarray(tokenizer(captions)), t, jax.random.key(b))
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
