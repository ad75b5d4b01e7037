"""The miniature's text encoder pre-training (issue 15: a trained text encoder, as SD has one): its data,
its caption space and its loss. That it learns is measured by the build (caption retrieval recorded
in build.json: 97% on held-out clips for the full budget)."""
import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.miniature import text_pretraining as tp
from animatediff_jax.miniature import world


def test_examples_cover_every_domain_moving_and_still():
    frames, captions = tp.dataset(7, 12)
    assert frames.shape == (12, world.SIZE, world.SIZE, 3 * len(tp.KEY_FRAMES)) and frames.dtype == np.float32
    assert -1.0 <= frames.min() and frames.max() <= 1.0
    said = dict(tp.every_caption())
    assert {said[c]["domain"] for c in captions} == {"base", "dreambooth", "lora"}
    for f, c in zip(frames, captions):
        moving = said[c]["direction"] is not None
        assert ("moving" in c) == moving
        keys = np.split(f, len(tp.KEY_FRAMES), axis=-1)
        assert all(np.array_equal(keys[0], k) for k in keys[1:]) != moving  # a still image: one frame thrice
    assert captions[1].startswith("sks, ") and captions[2].startswith("xyz, ")


def test_every_caption_is_the_worlds_caption_space():
    candidates = tp.every_caption()
    per_domain = len(procedural.COLORS) * len(procedural.SHAPES) * (1 + len(procedural.DIRECTIONS))
    assert len(candidates) == len({c for c, _ in candidates}) == 3 * per_domain
    _, captions = tp.dataset(3, 300)
    assert set(captions) <= {c for c, _ in candidates}


def test_contrastive_loss_targets_every_item_with_the_same_caption():
    labels = np.array([0, 0, 1, 2])
    same = labels[:, None] == labels[None, :]
    right = np.where(same, 10.0, -10.0)  # each caption scores its own clips high, the others low
    wrong = right[:, ::-1]
    assert float(tp.contrastive_loss(right, same)) < 0.7 < float(tp.contrastive_loss(wrong, same))
    # the two clips of caption 0 share its target: favouring one of them costs more than scoring both alike
    lopsided = right.copy()
    lopsided[0, 1] = lopsided[1, 1] = -10.0
    assert float(tp.contrastive_loss(lopsided, same)) > float(tp.contrastive_loss(right, same))
