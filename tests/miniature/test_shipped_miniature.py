"""The shipped miniature weights load through the ordinary loader and make a non-trivial video: measured
from the pixels (scoring.py), the generated object is there in (nearly) every frame and travels across
the frame. How well it follows the caption is measured by `python -m animatediff_jax.evaluate`
(RESULTS.md), not asserted here."""
import numpy as np

from animatediff_jax import evaluate
from animatediff_jax.miniature import scoring, world
from animatediff_jax.miniature.shipped import MINIATURE


def test_shipped_base_and_motion_module_make_moving_videos():
    row = evaluate.ROWS[0]  # base + motion module (schedule B)
    pipe = evaluate.load_pipeline(row, MINIATURE)
    prompts, _ = evaluate.prompts_for(row, 4)
    videos = evaluate.sample(pipe, prompts, [0, 1, 2, 3], world.FRAMES, steps=25, guidance=7.5)
    assert videos.shape == (4, world.FRAMES, world.SIZE, world.SIZE, 3)
    tracks = [scoring.track(v) for v in videos]
    present = [float(t.present.mean()) for t in tracks]
    assert np.mean(present) > 0.9, f"no object in many generated frames: {present}"
    moved = [scoring.direction_of(t) is not None for t in tracks]  # the centroid travels >= 2 px
    assert sum(moved) >= 3, f"the objects stay put: {moved}"
