"""What the miniature's image stages train on: the base's captions come in both forms, and the
autoencoder's loss weighs the object's pixels over the background's."""
import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.miniature import world
from animatediff_jax.miniature.autoencoder import image_batch, pixel_weights
from animatediff_jax.miniature.scoring import object_mask


def test_base_captions_describe_each_frame_with_and_without_motion_words():
    frames, captions = world.clip_frames(11, 0, 8)
    assert frames.shape == (8, 1, world.SIZE, world.SIZE, 3) and frames.dtype == np.uint8
    for i, text in enumerate(captions):
        spec = procedural.clip_spec(11, i, world.FRAMES, world.SIZE)
        assert text == procedural.caption(spec, motion=bool(i % 2))
        assert spec.color in text and spec.shape in text and ("moving" in text) == bool(i % 2)


def test_lora_frames_are_the_same_clips_on_its_background_with_its_trigger():
    frames, captions = world.clip_frames(31, 0, 6, world.LORA)
    plain, _ = world.clip_frames(31, 0, 6)
    for i, text in enumerate(captions):
        spec = procedural.clip_spec(31, i, world.FRAMES, world.SIZE)
        assert text == procedural.caption(spec, motion=bool(i % 2), style="checker", trigger=world.LORA.trigger)
        assert text.startswith("xyz, ") and text.endswith("on checker background")
        np.testing.assert_array_equal(frames[i, 0], procedural.render(spec, "checker")[i % world.FRAMES])
    assert not np.array_equal(frames, plain)        # the background differs, not only the caption


def test_object_pixels_weigh_more_and_the_weights_average_one():
    x = image_batch(0, 0, 8, world.SIZE, procedural.STYLES)
    w = pixel_weights(x, 4.0)[..., 0]
    mask = object_mask(x / 2 + 0.5)
    assert w.shape == x.shape[:3] and abs(w.mean() - 1.0) < 1e-5
    assert 0 < mask.mean() < 0.2                                  # the object is a small part of a frame
    np.testing.assert_allclose(w[mask] / w[~mask].max(), 4.0, rtol=1e-5)
    np.testing.assert_allclose(pixel_weights(x, 1.0), 1.0)         # weight 1: the plain mean loss
