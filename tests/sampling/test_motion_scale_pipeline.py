"""Motion scale through the pipeline (issue 16 item 3): 1 is today's frames bit for bit, 0 the frame-wise
UNet's, any other value the model's own `motion_scale` rule, per call without a new executable."""
import dataclasses

import numpy as np
import pytest

from animatediff_jax.errors import UsageError
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.init import example_inputs
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from animatediff_jax.sampling import pipeline as pl
from animatediff_jax.tiny_models import TINY_MOTION, TINY_TEXT, TINY_UNET, TINY_VAE, write_byte_tokenizer
from animatediff_jax.tokenizer import PromptTokenizer
from tests.models.test_motion_scale import strip_motion
from tests.utils import random_params

KW = dict(width=16, height=16, frames=4, steps=2, seeds=[3], progress=False)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tok = PromptTokenizer.from_pretrained(write_byte_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    nets = (UNet3DConditionModel(TINY_UNET, TINY_MOTION), AutoencoderKL(TINY_VAE), CLIPTextModel(TINY_TEXT))
    params = [random_params(net, i, *example_inputs(net)) for i, net in enumerate(nets)]  # proj_out not zero
    return tok, params


def _pipe(parts, motion=TINY_MOTION, unet_params=None, **unet_kw):
    tok, (unet_p, vae_p, text_p) = parts
    pipe = pl.AnimateDiffPipeline.build(TINY_UNET, motion, TINY_VAE, TINY_TEXT, unet_params or unet_p, vae_p, text_p,
                                        tok, dtype="float32")
    if unet_kw:  # the model's own (static) motion scale: the reference for the pipeline's per-call one
        pipe.unet = UNet3DConditionModel(TINY_UNET, motion, dtype=pipe.unet.dtype, param_dtype=pipe.unet.param_dtype,
                                         attention_impl=pipe.unet.attention_impl, **unet_kw)
    return pipe


def test_scale_one_is_bit_identical_to_no_scale(parts):
    pipe = _pipe(parts)
    plain = pipe(["a cat"], **KW).frames
    assert pl.motion_scaled_params(pipe.unet_params, pipe.unet, 1.0, {"mid_block": 1.0}) is pipe.unet_params
    np.testing.assert_array_equal(pipe(["a cat"], motion_scale=1.0, **KW).frames, plain)
    np.testing.assert_array_equal(pipe(["a cat"], motion_block_scales={"mid_block": 1.0}, **KW).frames, plain)


def test_scale_zero_gives_the_frame_wise_unets_frames(parts):
    pipe = _pipe(parts)
    framewise = _pipe(parts, motion=None, unet_params=strip_motion(parts[1][0]))(["a cat"], **KW).frames
    assert np.abs(pipe(["a cat"], **KW).frames - framewise).max() > 1e-3  # the modules matter here
    np.testing.assert_allclose(pipe(["a cat"], motion_scale=0.0, **KW).frames, framewise, rtol=0, atol=1e-6)
    blocks = {b: 0.0 for b in ("down_blocks_0", "down_blocks_1", "mid_block", "up_blocks_0", "up_blocks_1")}
    np.testing.assert_allclose(pipe(["a cat"], motion_block_scales=blocks, **KW).frames, framewise, rtol=0, atol=1e-6)


def test_scales_follow_the_models_rule_without_recompiling(parts):
    pipe = _pipe(parts)
    pipe(["a cat"], motion_scale=0.5, **KW)
    step = pipe.step_function(pipe.make_sampler(2), True, None)
    compiled = step.compiled_count()
    for scale, blocks in ((1.7, {}), (0.8, {"mid_block": 2.0, "down_blocks_0": 0.25})):
        got = pipe(["a cat"], motion_scale=scale, motion_block_scales=blocks, **KW).frames
        ref = _pipe(parts, motion_scale=scale, motion_block_scales=tuple(blocks.items()))(["a cat"], **KW).frames
        assert np.abs(got - pipe(["a cat"], **KW).frames).max() > 1e-3  # the scale moves the frames
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert step.compiled_count() == compiled  # a new scale is new data, not a new executable


@pytest.mark.parametrize("kw, match", [
    (dict(motion_block_scales={"up_blocks_9": 1.0}), "up_blocks_9"),
    (dict(motion_scale=float("nan")), r"motion scale must be in \[0, 100\], got nan"),
    (dict(motion_block_scales={"mid_block": float("inf")}), r"mid_block must be in \[0, 100\], got inf"),
    (dict(motion_block_scales={"mid_block": 1e30}), r"mid_block must be in \[0, 100\], got 1e\+30"),  # saturated
    (dict(guidance_scale=-1.0), r"guidance_scale: must be in \[0, 100\], got -1"),
])
def test_bad_scales_are_refused_before_compiling(parts, kw, match):
    with pytest.raises(UsageError, match=match):
        _pipe(parts)(["a cat"], **KW, **kw)


def test_a_scale_where_no_motion_module_is_is_refused(parts):
    no_mid = _pipe(parts, motion=dataclasses.replace(TINY_MOTION, use_mid_block=False))
    with pytest.raises(UsageError, match="mid_block has no motion module"):
        no_mid.check_inputs(width=16, height=16, frames=4, steps=2, context=None, num_prompts=1, num_seeds=1,
                            motion_block_scales={"mid_block": 0.5})
    framewise = _pipe(parts, motion=None, unet_params=strip_motion(parts[1][0]))
    with pytest.raises(UsageError, match="no motion module loaded"):
        framewise.check_inputs(width=16, height=16, frames=4, steps=2, context=None, num_prompts=1, num_seeds=1,
                               motion_scale=0.5)
