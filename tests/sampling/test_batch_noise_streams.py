"""Stochastic samplers: each video's per-step noise comes from its own seed, so a video in a batch is
the video its seed gives alone."""
import copy
import dataclasses

import numpy as np
import pytest

from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.tiny_models import TINY_MOTION, TINY_TEXT, TINY_UNET, TINY_VAE, write_byte_tokenizer
from animatediff_jax.tokenizer import PromptTokenizer
from tests.utils import rel_err

KW = dict(width=16, height=16, frames=4, steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    tok = PromptTokenizer.from_pretrained(write_byte_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    motion = dataclasses.replace(TINY_MOTION, max_seq_length=16)
    return AnimateDiffPipeline.random(TINY_UNET, motion, TINY_VAE, TINY_TEXT, tok, dtype="float32")


@pytest.mark.parametrize("scheduler,eta", [("euler_ancestral", 0.0), ("ddim", 1.0)])
def test_video_in_batch_equals_its_seed_alone(pipe, scheduler, eta):
    p = copy.copy(pipe)
    p.scheduler = scheduler
    assert p.make_sampler(3, eta=eta).stochastic
    alone = p(["a dog"], seeds=[22], eta=eta, **KW)
    batch = p(["a cat", "a dog"], seeds=[11, 22], eta=eta, **KW)
    assert rel_err(batch.latents[1], alone.latents[0]) < 1e-5  # float32 rounding of a batch of 2 vs 1
    assert rel_err(batch.frames[1], alone.frames[0]) < 1e-5
    # the per-step noise is really drawn: another seed's stream, same initial noise, moves the result
    other = p(["a dog"], seeds=[23], eta=eta, latents=_initial(p, 22), **KW)
    assert rel_err(other.latents[0], alone.latents[0]) > 1e-2


def _initial(p, seed):
    from animatediff_jax.sampling.pipeline import initial_noise
    h = KW["height"] // p.vae_scale
    return np.asarray(initial_noise([seed], (KW["frames"], h, h, 4)))
