"""Same video as diffusers' AnimateDiffControlNetPipeline (two ControlNets, MultiControlNet, each with its
own scale and guidance window) and AnimateDiffSparseControlNetPipeline (RGB and scribble SparseCtrl):
tiny random weights in the real layouts read through our loaders, the same latents, CFG on.

diffusers samples the RGB SparseCtrl's key-image latents from the VAE posterior with torch's global
generator, we from each video's seed: the VAE here has a posterior std of exp(-15) (quant_conv's
log-variance rows zeroed, bias -30), so both draws are the mean to ~1e-7 and the frames comparable.
"""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from animatediff_jax import loading
from animatediff_jax.sampling.control import Control, ControlNet
from animatediff_jax.sampling.pipeline import from_diffusers_latents
from convert.controlnet import load_controlnet
from tests.convert import controlnet_fixtures as cf
from tests.sampling.tiny_models import diffusers_pipeline

FRAMES, H, W, STEPS = 5, 48, 64, 3
PROMPT, NEG = "a red cat walking", "blurry"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("control_parity")
    ref = diffusers_pipeline(str(root / "base"), str(root / "adapter"))
    with torch.no_grad():  # a near-deterministic posterior (see the module docstring)
        latent = ref.vae.config.latent_channels
        ref.vae.quant_conv.weight[latent:] = 0.0
        ref.vae.quant_conv.bias[latent:] = -30.0
    ref.vae.save_pretrained(str(root / "base" / "vae"))
    ours = loading.load_pipeline(str(root / "base"), motion_module=str(root / "adapter"), scheduler_config="base",
                                 motion_input_norm="joint", dtype="float32", cache_dir=str(root / "cache"))
    latents = torch.randn((1, 4, FRAMES, H // 8, W // 8), generator=torch.Generator().manual_seed(7))
    return ref, ours, root, latents


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def _ours(root, name, model, joint_motion=False):
    folder = cf.save_folder(model, str(root / name))
    kind, config, motion, params = load_controlnet(folder)
    if joint_motion:  # diffusers' motion modules normalise over all frames (the pipeline's diffusers_norm)
        motion = dataclasses.replace(motion, input_norm="joint")
    return ControlNet.build(kind, config, motion, params, dtype="float32", source=name)


def _compare(got, expected, what):
    err = float(np.abs(got.frames - expected).max())
    print(f"{what}: frames max abs diff {err:.2e}")
    assert got.frames.shape == expected.shape == (1, FRAMES, H, W, 3)
    assert err <= 1e-3
    return err


def test_two_controlnets_match_diffusers(models):
    from diffusers import AnimateDiffControlNetPipeline
    ref, ours, root, latents = models
    nets = [cf.controlnet("small", seed=31), cf.controlnet("small", seed=32)]
    pipe = AnimateDiffControlNetPipeline(vae=ref.vae, text_encoder=ref.text_encoder, tokenizer=ref.tokenizer,
                                         unet=ref.unet, motion_adapter=ref.motion_adapter, controlnet=nets,
                                         scheduler=ref.scheduler)
    pipe.set_progress_bar_config(disable=True)
    videos = [_images(FRAMES, 1), _images(FRAMES, 2)]
    scales, starts, ends = [0.7, 1.3], [0.0, 0.3], [0.7, 1.0]
    expected = pipe(PROMPT, negative_prompt=NEG, num_frames=FRAMES, height=H, width=W, num_inference_steps=STEPS,
                    guidance_scale=7.5, latents=latents.clone(), output_type="np",
                    conditioning_frames=[[Image.fromarray(f) for f in v] for v in videos],
                    controlnet_conditioning_scale=scales, control_guidance_start=starts,
                    control_guidance_end=ends).frames
    controls = [Control(_ours(root, f"cn{i}", net), v, conditioning_scale=s, control_guidance_start=a,
                        control_guidance_end=b)
                for i, (net, v, s, a, b) in enumerate(zip(nets, videos, scales, starts, ends))]
    kw = dict(seeds=[0], width=W, height=H, frames=FRAMES, steps=STEPS, guidance_scale=7.5,
              latents=from_diffusers_latents(latents.numpy()), progress=False)
    got = ours([PROMPT], [NEG], controlnets=controls, **kw)
    err = _compare(got, expected, "2 ControlNets")
    # the comparison discriminates: without the second network's control the frames move far beyond it
    alone = ours([PROMPT], [NEG], controlnets=controls[:1], **kw).frames
    print(f"without the second ControlNet: {np.abs(alone - got.frames).max():.2e}")
    assert np.abs(alone - got.frames).max() > 100 * max(err, 1e-6)


@pytest.mark.parametrize("variant", ["rgb", "scribble"])
def test_sparsectrl_matches_diffusers(models, variant):
    from diffusers import AnimateDiffSparseControlNetPipeline, SparseControlNetModel
    ref, ours, root, latents = models
    # the scribble encoder embeds pixels 8x down (4 widths), as the released one does
    net = cf.randomize(SparseControlNetModel(**dict(cf.SPARSECTRLS[variant], conditioning_embedding_out_channels=(
        8, 8, 16, 16))), seed=41)
    pipe = AnimateDiffSparseControlNetPipeline(vae=ref.vae, text_encoder=ref.text_encoder, tokenizer=ref.tokenizer,
                                               unet=ref.unet, motion_adapter=ref.motion_adapter, controlnet=net,
                                               scheduler=ref.scheduler)
    pipe.set_progress_bar_config(disable=True)
    keys, keyframes = _images(2, 3), [0, 3]
    expected = pipe(PROMPT, negative_prompt=NEG, num_frames=FRAMES, height=H, width=W, num_inference_steps=STEPS,
                    guidance_scale=7.5, latents=latents.clone(), output_type="np",
                    conditioning_frames=[Image.fromarray(k) for k in keys], controlnet_frame_indices=keyframes,
                    controlnet_conditioning_scale=0.9).frames
    control = Control(_ours(root, f"sparse_{variant}", net, joint_motion=True), keys, conditioning_scale=0.9,
                      keyframes=keyframes)
    kw = dict(seeds=[0], width=W, height=H, frames=FRAMES, steps=STEPS, guidance_scale=7.5,
              latents=from_diffusers_latents(latents.numpy()), progress=False)
    got = ours([PROMPT], [NEG], controlnets=[control], **kw)
    err = _compare(got, expected, f"SparseCtrl {variant}")
    moved = ours([PROMPT], [NEG], controlnets=[dataclasses.replace(control, keyframes=[1, 4])], **kw).frames
    print(f"key frames moved: {np.abs(moved - got.frames).max():.2e}")
    assert np.abs(moved - got.frames).max() > 100 * max(err, 1e-6)
