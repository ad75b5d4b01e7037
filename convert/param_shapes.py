"""The parameter shapes our Flax networks have for a config, traced once and cached on disk.

    expected_shapes("unet", config)   # {("down_blocks_0", "resnets_0", "conv1", "kernel"): (3, 3, 320, 320), ...}

Tracing a network's `init` takes seconds at SD1.5 size, and every conversion checks its plan
against this table, so it is cached under `shape_cache_dir()`, keyed by network, config and a hash
of the network code (and jax/flax versions): a code change invalidates it.
"""
from __future__ import annotations

import functools
import json
import os

from animatediff_jax.outputs import atomic_path


def shape_cache_dir() -> str:
    """Where traced param shapes are cached: $ANIMATEDIFF_JAX_CACHE, else $XDG_CACHE_HOME or ~/.cache,
    under animatediff_jax/param_shapes."""
    root = os.environ.get("ANIMATEDIFF_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "animatediff_jax")
    return os.path.join(root, "param_shapes")


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
def expected_shapes(network: str, config) -> dict[tuple[str, ...], tuple[int, ...]]:
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
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict
    if network == "text_encoder":
        from animatediff_jax.models.clip_text import CLIPTextModel
        model, args = CLIPTextModel(config), (jnp.zeros((1, 2), jnp.int32),)
    elif network == "vae":
        from animatediff_jax.models.vae import AutoencoderKL
        model, args = AutoencoderKL(config), (jnp.zeros((1, 8, 8, config.in_channels)),)
    else:
        from animatediff_jax.models.unet3d import UNet3DConditionModel
        side = 2 ** (len(config.block_out_channels) - 1)
        model = UNet3DConditionModel(config, None)
        args = (jnp.zeros((1, 1, side, side, config.in_channels)), jnp.zeros((1,), jnp.int32),
                jnp.zeros((1, 1, config.cross_attention_dim)))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))
    return {p: tuple(v.shape) for p, v in flatten_dict(shapes["params"]).items()}
