"""The parameter shapes our Flax networks have for a config, traced once and cached on disk.

    flax_param_shapes("unet", config)   # {("down_blocks_0", "resnets_0", "conv1", "kernel"): (3, 3, 320, 320), ...}
    flax_param_shapes("controlnet", controlnet_config)
    flax_param_shapes("sparsectrl", (controlnet_config, motion_config))

Tracing a network's `init` takes seconds at SD1.5 size, and every conversion checks its plan
against this table (the sampler its weights, training its base UNet with the configured motion modules), so it is cached under `shape_cache_dir()`, keyed by network, config and a hash
of the network code (and jax/flax versions): a code change invalidates it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os

import animatediff_jax.models as models
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.controlnet import ControlNetModel, SparseControlNetModel
from animatediff_jax.models.init import param_shapes
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import cache_root, code_fingerprint


def shape_cache_dir() -> str:
    """Where traced param shapes are cached: `param_shapes/` under `params.cache_root()`."""
    return os.path.join(cache_root(), "param_shapes")


@functools.lru_cache(maxsize=1)
def flax_param_shapes(network: str, config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape of our `network` ("unet" without motion modules, "vae",
    "text_encoder") with `config` (`module_param_shapes`)."""
    return module_param_shapes(_network(network, config))


def module_param_shapes(module) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape of a network module (`animatediff_jax.models.init.param_shapes`).
    Tracing a network's init takes seconds, so the table is cached on disk (`shape_cache_dir()`),
    keyed by the module's fields (its repr: configs included) and a hash of the network code; an
    unwritable cache only costs the trace."""
    return _cached_shapes(repr(module), module)


@functools.lru_cache(maxsize=16)
def _cached_shapes(key_text: str, module) -> dict[tuple[str, ...], tuple[int, ...]]:
    key = hashlib.sha256(f"{key_text} {code_fingerprint(os.path.dirname(models.__file__))}".encode()).hexdigest()[:32]
    path = os.path.join(shape_cache_dir(), f"{type(module).__name__}-{key}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return {tuple(p): tuple(s) for p, s in json.load(f)}
    except (OSError, ValueError, TypeError):
        pass
    shapes = param_shapes(module)
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump([[list(p), list(s)] for p, s in shapes.items()], f)
    except OSError:
        pass
    return shapes


def _network(network: str, config):
    """Our module for a network name: "unet" (no motion modules), "vae", "text_encoder",
    "controlnet" (config a ControlNetConfig), "sparsectrl" (config (ControlNetConfig, MotionConfig))."""
    if network == "controlnet":
        return ControlNetModel(config)
    if network == "sparsectrl":
        return SparseControlNetModel(config[0], motion=config[1])
    if network == "text_encoder":
        return CLIPTextModel(config)
    if network == "vae":
        return AutoencoderKL(config)
    return UNet3DConditionModel(config, None)
