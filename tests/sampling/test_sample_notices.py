"""What the sampler changes on the user's behalf is said: an --init-video resampled to the run's frames
and size, and a `--scheduler-config base` whose base has no scheduler config."""
import numpy as np
import pytest

from animatediff_jax import loading, sample
from animatediff_jax.sampling.samplers import ORIGINAL_SCHEDULER_KWARGS
from animatediff_jax.video import write_gif
from tests.sampling.stop_at_load import Validated, stop_at_load


@pytest.mark.parametrize("flags,note", [
    (["--frames", "8"], "16x24x40 (frames x height x width) resampled to 8x32x32"),
    (["--frames", "16", "--width", "40", "--height", "24"], None),
])
def test_init_video_resampling_is_said(tmp_path, monkeypatch, capsys, flags, note):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    gif = write_gif(str(tmp_path / "in.gif"), np.random.default_rng(0).random((16, 24, 40, 3)))
    stop_at_load(monkeypatch)
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv := ["--prompt", "a", "--init-video", gif, *flags,
                                                            "--out", str(tmp_path / "o")]), argv)
    out = capsys.readouterr().out
    assert (f"--init-video {gif}: {note} (frames evenly in time, bicubic)" in out) if note else "resampled" not in out


def test_base_scheduler_config_missing_is_said():
    with pytest.warns(UserWarning, match="the base model has none"):
        assert loading.scheduler_settings("base", {}) == dict(ORIGINAL_SCHEDULER_KWARGS)
    assert loading.scheduler_settings("base", {"beta_end": 0.02}) == {"beta_end": 0.02}
