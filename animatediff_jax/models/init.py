"""Initialising the networks without data: example inputs, traced parameter shapes, random params,
and the one check that a params tree fits a network.

Parameter shapes do not depend on the example inputs' sizes, only on the configs, so the inputs
are the smallest a network accepts (one down-sampling step per level must stay >= 1 pixel).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.controlnet import ControlNetModel, SparseControlNetModel
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.params import check_shapes, flatten


def example_inputs(module) -> tuple:
    """Inputs `module.init` can trace: UNet (latents (1, 2, s, s, C_in), timesteps (1,), text (1, 2, D)),
    VAE (images (1, s, s, C_in)), text encoder (token ids (1, 4) int32), ControlNets (the UNet's inputs,
    a condition (1, 2, s·k, s·k, C_cond) with k the condition embedding's factor, SparseCtrl's mask
    (1, 2)); s = 2^(levels - 1), at least 8."""
    if isinstance(module, UNet3DConditionModel):
        c = module.config
        side = max(8, 2 ** (len(c.block_out_channels) - 1))
        return (jnp.zeros((1, 2, side, side, c.in_channels)), jnp.zeros((1,)),
                jnp.zeros((1, 2, c.cross_attention_dim)))
    if isinstance(module, AutoencoderKL):
        side = max(8, 2 ** (len(module.config.block_out_channels) - 1))
        return (jnp.zeros((1, side, side, module.config.in_channels)),)
    if isinstance(module, CLIPTextModel):
        return (jnp.zeros((1, 4), jnp.int32),)
    if isinstance(module, (ControlNetModel, SparseControlNetModel)):
        # 2 frames of 2^(levels-1) latents (at least 8); the condition at the embedding's factor times that
        c = module.config
        side = max(8, 2 ** (len(c.block_out_channels) - 1))
        cond = side * c.condition_downsample_factor()
        inputs = (jnp.zeros((1, 2, side, side, c.in_channels)), jnp.zeros((1,)),
                  jnp.zeros((1, 2, c.cross_attention_dim)), jnp.zeros((1, 2, cond, cond, c.conditioning_channels)))
        return inputs + ((jnp.ones((1, 2)),) if isinstance(module, SparseControlNetModel) else ())
    raise TypeError(f"no example inputs for {type(module).__name__}")


def param_shapes(module, *inputs) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax param path -> shape of `module` (traced with `jax.eval_shape`, nothing allocated).
    `inputs`: the example inputs (default `example_inputs(module)`)."""
    inputs = inputs or example_inputs(module)
    tree = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs))["params"]
    return {p: tuple(s.shape) for p, s in flatten(tree).items()}


def random_params(module, seed: int, *example_inputs) -> dict:
    """Random params of a Flax module without compiling its init: shapes from `jax.eval_shape`,
    weights N(0, 1/fan_in), norm scales 1, biases 0 (numpy, so building SD1.5-size models is quick)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example_inputs))["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = path[-1].key
        if name == "scale":
            return np.ones(s.shape, np.float32)
        if name == "bias":
            return np.zeros(s.shape, np.float32)
        fan_in = int(np.prod(s.shape[:-1])) or 1
        return (rng.standard_normal(s.shape, np.float32) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def check_params(module, params: dict, what: str) -> None:
    """`params.check_shapes` against the traced shapes of `module`."""
    check_shapes(params, param_shapes(module), what)
