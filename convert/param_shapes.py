"""The parameter shapes our Flax networks have for a config, traced once and cached on disk.

    flax_param_shapes("unet", config)   # {("down_blocks_0", "resnets_0", "conv1", "kernel"): (3, 3, 320, 320), ...}
    flax_param_shapes("controlnet", controlnet_config)
    flax_param_shapes("sparsectrl", (controlnet_config, motion_config))

Tracing a network's `init` takes seconds at SD1.5 size, and every conversion checks its plan
against this table, so it is cached under `shape_cache_dir()`, keyed by network, config and a hash
of the network code (and jax/flax versions): a code change invalidates it.
"""
from __future__ import annotations

import functools
import json
import os

from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import cache_root


def shape_cache_dir() -> str:
    """Where traced param shapes are cached: `param_shapes/` under `params.cache_root()`."""
    return os.path.join(cache_root(), "param_shapes")


@functools.lru_cache(maxsize=1)
def _models_fingerprint() -> str:
    """Hash of the network code (and jax/flax versions): a cached shape table is valid while it holds."""
    import hashlib

    import flax
    import jax

    import animatediff_jax.models as models
    h = hashlib.sha256(f"{jax.__version__} {flax.__version__}".encode())
    folder = os.path.dirname(models.__file__)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def flax_param_shapes(network: str, config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape that our network with `config` has. Tracing the network's init takes
    seconds, so the table is cached on disk (`shape_cache_dir()`), keyed by network, config and a
    hash of the network code; an unwritable cache only costs the trace."""
    import hashlib
    key = hashlib.sha256(f"{network} {config!r} {_models_fingerprint()}".encode()).hexdigest()[:32]
    path = os.path.join(shape_cache_dir(), f"{network}-{key}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return {tuple(p): tuple(s) for p, s in json.load(f)}
    except (OSError, ValueError, TypeError):
        pass
    shapes = _traced_shapes(network, config)
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump([[list(p), list(s)] for p, s in shapes.items()], f)
    except OSError:
        pass
    return shapes


def _traced_shapes(network: str, config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape that our network with `config` has (traced, nothing allocated)."""
    from animatediff_jax.models import init  # local: jax/flax stay unloaded while the table is cached
    if network in ("controlnet", "sparsectrl"):
        return _control_shapes(network, config)
    if network == "text_encoder":
        from animatediff_jax.models.clip_text import CLIPTextModel
        return init.param_shapes(CLIPTextModel(config))
    if network == "vae":
        from animatediff_jax.models.vae import AutoencoderKL
        return init.param_shapes(AutoencoderKL(config))
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    return init.param_shapes(UNet3DConditionModel(config, None))


def _control_shapes(network: str, config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """"controlnet": `config` a ControlNetConfig; "sparsectrl": (ControlNetConfig, MotionConfig).
    Traced on the smallest inputs: 2 frames of 2^(levels-1) latents (at least 8), the condition at
    `condition_downsample_factor()` times that."""
    import jax.numpy as jnp  # local, as above

    from animatediff_jax.models import controlnet, init
    cfg, motion = config if network == "sparsectrl" else (config, None)
    side = max(8, 2 ** (len(cfg.block_out_channels) - 1))
    cond_side = side * cfg.condition_downsample_factor()
    sample = jnp.zeros((1, 2, side, side, cfg.in_channels))
    condition = jnp.zeros((1, 2, cond_side, cond_side, cfg.conditioning_channels))
    inputs = (sample, jnp.zeros((1,)), jnp.zeros((1, 2, cfg.cross_attention_dim)), condition)
    if motion is None:
        return init.param_shapes(controlnet.ControlNetModel(cfg), *inputs)
    return init.param_shapes(controlnet.SparseControlNetModel(cfg, motion=motion), *inputs, jnp.ones((1, 2)))
