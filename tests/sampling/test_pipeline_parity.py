"""Same video as diffusers' AnimateDiffPipeline: tiny random base folder + MotionAdapter, same latents."""
import numpy as np
import pytest
import torch

from animatediff_jax import loading
from animatediff_jax.sampling.context_windows import ContextOptions
from animatediff_jax.sampling.pipeline import from_diffusers_latents
from tests.sampling.tiny_models import diffusers_pipeline
from tests.utils import rel_err

FRAMES, H, W = 5, 48, 64  # odd frame count, non-square: latents 5 x 6 x 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    ref = diffusers_pipeline(str(root / "base"), str(root / "adapter"))
    latents = torch.randn((2, 4, FRAMES, H // 8, W // 8), generator=torch.Generator().manual_seed(7))
    return ref, root, latents


def _ours(root, scheduler):
    return loading.load_pipeline(str(root / "base"), motion_module=str(root / "adapter"), scheduler=scheduler,
                                    scheduler_config="base", motion_input_norm="joint", dtype="float32",
                                    cache_dir=str(root / "cache"))


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_same_frames_as_diffusers(models, scheduler):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler
    ref, root, latents = models
    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[scheduler]
    ref.scheduler = cls.from_config(ref.scheduler.config)
    prompts, negs = ["a red cat walking", "waves"], ["blurry", ""]
    kw = dict(prompt=prompts, negative_prompt=negs, num_frames=FRAMES, height=H, width=W, num_inference_steps=3,
              guidance_scale=7.5)
    expected = ref(latents=latents.clone(), output_type="np", **kw).frames
    ref_latents = ref(latents=latents.clone(), output_type="latent", **kw).frames  # (B, 4, F, h, w)
    pipe = _ours(root, scheduler)
    assert pipe.make_sampler(3).name == scheduler
    got = pipe(prompts, negs, seeds=[0, 1], width=W, height=H, frames=FRAMES, steps=3, guidance_scale=7.5,
               latents=from_diffusers_latents(latents.numpy()), progress=False)
    assert got.frames.shape == expected.shape == (2, FRAMES, H, W, 3)
    err = np.abs(got.frames - expected).max()
    lat_err = rel_err(got.latents, from_diffusers_latents(ref_latents.numpy()))
    print(f"{scheduler}: frames max abs diff {err:.2e}; latents rel err {lat_err:.2e}")
    assert err <= 1e-3
    assert lat_err <= 1e-4
    # the comparison discriminates: a different guidance scale moves the latents far beyond it
    other = pipe(prompts, negs, seeds=[0, 1], width=W, height=H, frames=FRAMES, steps=3,
                 guidance_scale=2.0, latents=from_diffusers_latents(latents.numpy()), progress=False)
    print(f"guidance 2 vs 7.5: latents rel diff {rel_err(other.latents, got.latents):.2e}")
    assert rel_err(other.latents, got.latents) > max(1e-4, 100 * lat_err)

def test_same_seed_same_video_and_batch_independent(models):
    _, root, _ = models
    pipe = _ours(root, "ddim")
    kw = dict(width=W, height=H, frames=FRAMES, steps=3, progress=False)  # the shapes compiled above
    a = pipe(["a cat", "a dog"], seeds=[5, 6], **kw).frames
    b = pipe(["a cat", "a dog"], seeds=[5, 6], **kw).frames
    c = pipe(["a cat", "fireworks"], seeds=[5, 9], **kw).frames
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0], c[0], atol=1e-6)  # a video does not depend on its batch neighbours
    assert np.abs(a[1] - c[1]).max() > 1e-3


def test_motion_scope_windows_are_diffusers_free_noise(models):
    """Context scope "motion" = diffusers' FreeNoise (`enable_free_noise`): 8 frames in windows of 4
    every 2 (they tile the frames, where diffusers' and our last-window rule agree), pyramid weights."""
    from diffusers import DDIMScheduler
    ref, root, _ = models
    ref.scheduler = DDIMScheduler.from_config(ref.scheduler.config)
    frames = 8
    latents = torch.randn((1, 4, frames, H // 8, W // 8), generator=torch.Generator().manual_seed(11))
    kw = dict(prompt="a red cat walking", negative_prompt="blurry", num_frames=frames, height=H, width=W,
              num_inference_steps=3, guidance_scale=7.5, output_type="latent")
    ref.enable_free_noise(context_length=4, context_stride=2, weighting_scheme="pyramid")
    try:
        expected = from_diffusers_latents(ref(latents=latents.clone(), **kw).frames.numpy())
    finally:
        ref.disable_free_noise()
    pipe = _ours(root, "ddim")
    ours = {scope: pipe(["a red cat walking"], ["blurry"], seeds=[0], width=W, height=H, frames=frames, steps=3,
                        guidance_scale=7.5, latents=from_diffusers_latents(latents.numpy()), progress=False,
                        context=ContextOptions(4, 2, "pyramid", shuffle_noise=False, scope=scope)).latents
            for scope in ("motion", "unet")}
    err = rel_err(ours["motion"], expected)
    print(f"FreeNoise: latents rel err {err:.2e}; scope unet vs motion {rel_err(ours['unet'], expected):.2e}")
    assert err <= 1e-4
    # the comparison discriminates: the other scope (whole UNet per window) lands ~100x further away
    # (this tiny model's motion modules move the latents little, so both are near)
    assert rel_err(ours["unet"], expected) > 30 * err
