"""The procedural world: deterministic, captions true of the pixels, object always visible."""
import numpy as np
import pytest

from animatediff_jax.data import procedural as P


def _object_mask(video, spec):
    colour = np.asarray(P.COLORS[spec.color], np.int16)
    return (np.abs(video.astype(np.int16) - colour).sum(-1) < 30)


@pytest.mark.parametrize("frames,size,style", [(16, 64, "plain"), (7, 48, "stripes"), (16, 32, "dots"),
                                               (5, 64, "checker")])
def test_clip_shape_caption_and_motion(frames, size, style):
    for index in range(6):
        video, cap = P.generate_clip(3, index, frames=frames, size=size, style=style)
        spec = P.clip_spec(3, index, frames=frames, size=size)
        assert video.shape == (frames, size, size, 3) and video.dtype == np.uint8
        assert spec.color in cap and spec.shape in cap and f"moving {spec.direction}" in cap
        assert ("background" in cap) == (style != "plain")
        mask = _object_mask(video, spec)
        assert mask.sum(axis=(1, 2)).min() > 0.5 * spec.radius ** 2  # visible in every frame
        # Measured centroid moves the captioned way by about speed * (frames - 1).
        ys, xs = np.mgrid[0:size, 0:size]
        cx = [(xs * m).sum() / m.sum() for m in mask]
        cy = [(ys * m).sum() / m.sum() for m in mask]
        dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
        expect = spec.speed * (frames - 1)
        along = {"left": -dx, "right": dx, "up": -dy, "down": dy}[spec.direction]
        across = {"left": dy, "right": dy, "up": dx, "down": dx}[spec.direction]
        assert abs(along - expect) < 1.0 + 0.05 * expect and abs(across) < 1.0
        # Never leaves the frame: the analytic extent stays inside.
        c = spec.centres()
        assert (c - spec.radius).min() >= 0 and (c + spec.radius).max() <= size


def test_deterministic_and_seed_dependent():
    a, ca = P.generate_clip(0, 5)
    b, cb = P.generate_clip(0, 5)
    assert ca == cb and np.array_equal(a, b)
    others = [P.generate_clip(1, i)[0] for i in range(4)]
    assert not any(np.array_equal(a, o) for o in others)


def test_image_caption_and_vocabulary():
    img, cap = P.generate_image(2, 1, size=40, style="stripes", trigger="sks")
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8
    assert cap.startswith("sks, ") and "moving" not in cap and cap.endswith("on stripes background")
    vocab = set(P.vocabulary(extra=("sks",)))
    for i in range(50):
        for style in P.STYLES:
            _, c = P.generate_clip(0, i, frames=2, size=16, style=style)
            assert set(c.split()) <= vocab, c
    assert set(cap.replace(",", "").split()) <= vocab


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        P.generate_clip(0, 0, style="neon")
    with pytest.raises(ValueError, match="size"):
        P.generate_clip(0, 0, size=8)


def test_a_capped_speed_never_leaves_a_negative_start_range():
    """travel_room - speed * (frames - 1) rounded to -1e-13 and numpy's uniform refused it (ValueError)."""
    for index in range(20):
        spec = P.clip_spec(0, index, frames=300, size=16)
        assert np.all((spec.centres() >= spec.radius) & (spec.centres() <= 16 - spec.radius))
