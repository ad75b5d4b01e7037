from dataclasses import replace

import numpy as np
import pytest
from transformers import CLIPTokenizer

from animatediff_jax.data import procedural
from animatediff_jax.miniature import scoring, world
from animatediff_jax.miniature.vocab import write_word_tokenizer


def test_every_caption_word_is_one_token(tmp_path):
    write_word_tokenizer(str(tmp_path), world.words(), max_length=world.MAX_TOKENS)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    for w in world.words():
        assert len(tok(w).input_ids) == 3, w
    caption = procedural.generate_clip(0, 5, style="stripes", trigger="sks")[1]
    ids = tok(caption).input_ids
    assert len(ids) == len(caption.replace(",", " ,").split()) + 2
    assert tok.decode(ids, skip_special_tokens=True).replace(" ,", ",") == caption
    # text outside the vocabulary still tokenizes (into pieces), never fails
    assert tok.convert_ids_to_tokens(tok("Hello").input_ids)[1:-1] == ["h", "ell", "o</w>"]


@pytest.fixture(scope="module")
def judges():
    return scoring.Judges(scoring.style_classifier(world.SIZE, per_style=48), scoring.shape_classifier(world.SIZE))


def test_real_clips_score_as_their_captions(judges):
    scores = []
    for i in range(40):
        style = procedural.STYLES[i % len(procedural.STYLES)]
        spec = procedural.clip_spec(99, i, frames=world.FRAMES, size=world.SIZE)
        video = procedural.render(spec, style)
        scores.append(scoring.score_video(video, spec, style, judges))
    assert np.mean([s.motion for s in scores]) == 1.0
    assert np.mean([s.moving for s in scores]) == 1.0
    assert np.mean([s.color for s in scores]) == 1.0
    assert np.mean([s.shape for s in scores]) == 1.0
    assert np.mean([s.consistency for s in scores]) == 1.0
    assert np.mean([s.domain for s in scores]) >= 0.9


def test_shape_is_read_from_single_images(judges):
    """Held-out images (another dataset seed than the classifier's) of every shape, colour, size and
    background: the shape is read right in nearly all of them, and a different shape is not taken
    for the captioned one."""
    right, wrong = [], []
    for i in range(150):
        spec = procedural.clip_spec(77, i, frames=1, size=world.SIZE)
        shape = procedural.SHAPES[i % 3]
        other = procedural.SHAPES[(i + 1) % 3]
        image = procedural.render(replace(spec, shape=shape), procedural.STYLES[i % 4])[:1]
        right.append(scoring.score_video(image, replace(spec, shape=shape), "plain", judges, motion=False).shape)
        wrong.append(scoring.score_video(image, replace(spec, shape=other), "plain", judges, motion=False).shape)
    assert np.mean(right) >= 0.95 and np.mean(wrong) <= 0.05


def test_static_and_noise_videos_score_low(judges):
    spec = procedural.clip_spec(99, 3, frames=world.FRAMES, size=world.SIZE)
    video = procedural.render(spec)
    still = np.repeat(video[:1], world.FRAMES, axis=0)
    assert scoring.score_video(still, spec, "plain", judges).motion == 0.0
    assert scoring.score_video(still, spec, "plain", judges).moving == 0.0
    # the same object moving the opposite way is a motion failure, but still coherent motion
    reverse = scoring.score_video(video[::-1], spec, "plain", judges)
    assert reverse.motion == 0.0 and reverse.moving == 1.0
    # frames of unrelated clips: no consistent object
    jumble = np.stack([procedural.render(procedural.clip_spec(5, i, frames=1, size=world.SIZE))[0]
                       for i in range(world.FRAMES)])
    jumbled = scoring.score_video(jumble, spec, "plain", judges)
    assert jumbled.consistency < 0.8 and jumbled.moving == 0.0


def test_an_object_jumping_between_frames_is_not_consistent():
    """Same object, same colour and size, at an independent place every frame (what frames denoised
    independently look like): not one object moving."""
    base = procedural.clip_spec(7, 0, frames=1, size=world.SIZE)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(world.FRAMES):
        start = tuple(rng.uniform(base.radius + 1, world.SIZE - base.radius - 1, 2))
        frames.append(procedural.render(procedural.ClipSpec(base.color, base.shape, base.direction, base.background,
                                                            base.radius, start, 0.0, 1, world.SIZE))[0])
    t = scoring.track(np.stack(frames))
    assert len(set(c for c in t.colors if c)) == 1  # colour and size alone would call it consistent
    assert scoring.consistency(t) < 0.5


def test_frames_without_an_object_are_not_consistent():
    """Consistency is "frames showing the same object": a smoke build's videos (saturated noise over ~60% of
    every frame, the same each frame) scored 94-100% with no object found (colour, shape 0%)."""
    rng = np.random.default_rng(0)
    background = np.full((world.FRAMES, world.SIZE, world.SIZE, 3), 110, np.uint8)
    assert scoring.consistency(scoring.track(background)) == 0.0
    noise = background.copy()
    noise[..., 0] += (rng.random(noise.shape[:3]) < 0.6).astype(np.uint8) * 120  # saturated red specks
    assert not scoring.track(noise).present.any() and scoring.consistency(scoring.track(noise)) == 0.0
    flood = np.broadcast_to(np.asarray(procedural.COLORS["red"], np.uint8), background.shape)  # one colour, whole frame
    assert scoring.consistency(scoring.track(flood)) == 0.0
    half = procedural.render(procedural.clip_spec(3, 0, frames=world.FRAMES, size=world.SIZE))
    half[: world.FRAMES // 2] = background[: world.FRAMES // 2]  # the object in the second half only
    assert scoring.consistency(scoring.track(half)) == 0.5


def test_direction_probe_separates_signal_from_noise():
    from animatediff_jax.miniature.direction_probe import probe_accuracy
    rng = np.random.default_rng(0)
    labels = rng.choice(procedural.DIRECTIONS, 400)
    signal = (labels[:, None] == np.asarray(procedural.DIRECTIONS)[None]).astype(float)
    features = np.concatenate([signal, rng.standard_normal((400, 12))], 1) + 0.3 * rng.standard_normal((400, 16))
    assert probe_accuracy(features, labels) > 0.95
    assert probe_accuracy(rng.standard_normal((400, 16)), labels) < 0.45  # chance is 0.25
