"""Motion scale (ComfyUI's multiplier on the motion modules' residual): 1 is the paper's UNet bit for
bit, 0 is the frame-wise UNet, per-block factors scale only their block."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.models.init import random_params
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.tiny_models import TINY_MOTION, TINY_UNET

FRAMES = 5  # odd, below the module's 32 positions


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, FRAMES, 8, 6, TINY_UNET.in_channels)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((2, 7, TINY_UNET.cross_attention_dim)), jnp.float32)
    t = jnp.asarray([17, 503])
    params = random_params(UNet3DConditionModel(TINY_UNET, TINY_MOTION), 3, x, t, text)
    return x, t, text, params


def run(inputs, **kw):
    x, t, text, params = inputs
    return np.asarray(jax.jit(UNet3DConditionModel(TINY_UNET, TINY_MOTION, **kw).apply)({"params": params}, x, t, text))


def strip_motion(tree):
    """The params tree without any motion_modules_* subtree (what the frame-wise UNet has)."""
    if not isinstance(tree, dict):
        return tree
    return {k: strip_motion(v) for k, v in tree.items() if not k.startswith("motion_modules")}


def test_scale_one_is_bit_identical(inputs):
    assert np.array_equal(run(inputs, motion_scale=1.0), run(inputs))


def test_scale_zero_is_the_frame_wise_unet(inputs):
    x, t, text, params = inputs
    framewise = np.asarray(jax.jit(UNet3DConditionModel(TINY_UNET, None).apply)({"params": strip_motion(params)},
                                                                                x, t, text))
    with_module = run(inputs)
    assert np.abs(with_module - framewise).max() > 1e-3  # the modules do change the output
    np.testing.assert_allclose(run(inputs, motion_scale=0.0), framewise, rtol=0, atol=1e-6)
    every_block = tuple((b, 0.0) for b in ("down_blocks_0", "down_blocks_1", "mid_block", "up_blocks_0", "up_blocks_1"))
    np.testing.assert_allclose(run(inputs, motion_block_scales=every_block), framewise, rtol=0, atol=1e-6)


def test_block_factor_changes_only_what_it_should(inputs):
    base = run(inputs)
    doubled = run(inputs, motion_scale=2.0)
    assert np.abs(doubled - base).max() > 1e-3
    # a factor of 1 for a block is a no-op; 2 on one block alone differs from 2 everywhere
    assert np.array_equal(run(inputs, motion_block_scales=(("mid_block", 1.0),)), base)
    one_block = run(inputs, motion_block_scales=(("up_blocks_1", 2.0),))
    assert np.abs(one_block - base).max() > 1e-4 and np.abs(one_block - doubled).max() > 1e-4


@pytest.mark.parametrize("kw", [dict(motion_block_scales=(("up_blocks_9", 1.0),)), dict(motion_scale=float("nan"))])
def test_bad_scales_are_refused(inputs, kw):
    with pytest.raises(ValueError, match="motion"):
        run(inputs, **kw)
