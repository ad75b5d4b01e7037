"""Pipeline features on the tiny random model: context windows, prompt travel, FreeInit, video-to-video."""
import dataclasses

import numpy as np
import pytest

from animatediff_jax.sampling.context_windows import ContextOptions
from animatediff_jax.sampling.freeinit import FreeInitOptions
from animatediff_jax.sampling.pipeline import AnimateDiffPipeline
from animatediff_jax.tiny_models import TINY_MOTION, TINY_TEXT, TINY_UNET, TINY_VAE, write_byte_tokenizer
from animatediff_jax.tokenizer import PromptTokenizer

KW = dict(width=16, height=16, steps=2, progress=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    tok = PromptTokenizer.from_pretrained(write_byte_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    motion = dataclasses.replace(TINY_MOTION, max_seq_length=16)  # a 16-frame position encoding
    return AnimateDiffPipeline.random(TINY_UNET, motion, TINY_VAE, TINY_TEXT, tok, dtype="float32")


def test_window_covering_all_frames_equals_plain_loop(pipe):
    plain = pipe(["a cat"], seeds=[3], frames=8, **KW).frames
    windowed = pipe(["a cat"], seeds=[3], frames=8, context=ContextOptions(length=16, stride=4), **KW).frames
    np.testing.assert_array_equal(windowed, plain)


def test_40_frames_with_16_frame_position_encoding(pipe):
    with pytest.raises(ValueError, match="exceed the motion module's position encoding"):
        pipe(["a cat"], seeds=[3], frames=40, **KW)
    out = pipe(["a cat"], seeds=[3], frames=40, context=ContextOptions(length=16, stride=8), **KW)
    assert out.frames.shape == (1, 40, 16, 16, 3) and np.isfinite(out.frames).all()


def test_prompt_travel(pipe):
    same = pipe([{0: "a cat", 5: "a cat"}], seeds=[1], frames=8, **KW).frames
    plain = pipe(["a cat"], seeds=[1], frames=8, **KW).frames
    np.testing.assert_allclose(same, plain, atol=1e-4)  # one prompt everywhere: no travel
    moved = pipe([{0: "a cat", 5: "a dog on the moon"}], seeds=[1], frames=8, **KW).frames
    assert np.abs(moved - plain).max() > 1e-3
    with pytest.raises(ValueError, match="outside"):
        pipe([{0: "a", 9: "b"}], seeds=[1], frames=8, **KW)


def test_freeinit_changes_the_result_and_is_reproducible(pipe):
    plain = pipe(["a cat"], seeds=[2], frames=8, **KW).frames
    fi = FreeInitOptions(iterations=2, method="gaussian")
    a = pipe(["a cat"], seeds=[2], frames=8, freeinit=fi, **KW).frames
    b = pipe(["a cat"], seeds=[2], frames=8, freeinit=fi, **KW).frames
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - plain).max() > 1e-4


def test_video_to_video(pipe):
    video = np.random.default_rng(0).random((8, 16, 16, 3), np.float32)
    out = pipe(["a cat"], seeds=[4], frames=8, init_video=video, strength=0.5, **KW)
    assert out.frames.shape == (1, 8, 16, 16, 3)
    with pytest.raises(ValueError, match="init video has shape"):
        pipe(["a cat"], seeds=[4], frames=5, init_video=video, strength=0.5, **KW)
    with pytest.raises(ValueError, match="strength"):
        pipe(["a cat"], seeds=[4], frames=8, init_video=video, strength=0.0, **KW)


def test_bad_sizes(pipe):
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe(["a cat"], frames=4, width=20, height=16, steps=2)
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        pipe(["a cat"], seeds=[1, 2], frames=4, **KW)


def test_freeinit_with_video_to_video(pipe, monkeypatch):
    from animatediff_jax.sampling import freeinit
    from animatediff_jax.sampling.pipeline import FREEINIT, stream_noise
    video = np.random.default_rng(1).random((8, 16, 16, 3), np.float32)
    v2v = dict(seeds=[4], frames=8, init_video=video, strength=0.6, **KW)
    fi = FreeInitOptions(iterations=2, method="butterworth")
    plain = pipe(["a cat"], **v2v).frames
    a = pipe(["a cat"], freeinit=fi, **v2v).frames
    np.testing.assert_array_equal(a, pipe(["a cat"], freeinit=fi, **v2v).frames)
    assert np.abs(a - plain).max() > 1e-4
    # a filter keeping no low frequency: pass 2 is a fresh video-to-video pass, the input video noised
    # to the strength's timestep with FreeInit's fresh noise for pass 2
    monkeypatch.setattr(freeinit, "lowpass_filter", lambda f, h, w, o: np.zeros((f, h, w), np.float32))
    high_only = pipe(["a cat"], freeinit=fi, **v2v)
    h = 16 // pipe.vae_scale
    fresh = np.asarray(stream_noise([4], FREEINIT + 1, (8, h, h, 4)))
    again = pipe(["a cat"], latents=fresh, **v2v)
    np.testing.assert_allclose(high_only.latents, again.latents, rtol=0, atol=1e-5)
