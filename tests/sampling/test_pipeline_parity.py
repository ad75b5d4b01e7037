"""Same video as diffusers' AnimateDiffPipeline: tiny random base folder + MotionAdapter, same latents."""
import numpy as np
import pytest
import torch

from animatediff_jax import loading
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
