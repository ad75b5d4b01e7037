"""What the sampler changes on the user's behalf is said: an --init-video resampled to the run's frames
and size, and a `--scheduler-config base` whose base has no scheduler config."""
import numpy as np
import pytest

from animatediff_jax import loading, sample
from animatediff_jax.models import attention as attention_lib
from animatediff_jax.sampling.samplers import ORIGINAL_SCHEDULER_KWARGS
from animatediff_jax.video import write_gif
from tests.sampling.stop_at_load import Validated, stop_at_load


@pytest.mark.parametrize("flags,note,stretched", [
    (["--frames", "8"], "16x24x40 (frames x height x width) resampled to 8x32x32", "40x24 frames are stretched to "
     "32x32 (aspect 1.67 to 1.00, as diffusers' video-to-video does)"),
    (["--frames", "16", "--width", "40", "--height", "24"], None, None),
    (["--frames", "16", "--width", "80", "--height", "48"], "16x24x40 (frames x height x width) resampled to 16x48x80",
     None),  # the same aspect: resized, not stretched
])
def test_init_video_resampling_is_said(tmp_path, monkeypatch, capsys, recwarn, flags, note, stretched):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    gif = write_gif(str(tmp_path / "in.gif"), np.random.default_rng(0).random((16, 24, 40, 3)))
    stop_at_load(monkeypatch)
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv := ["--prompt", "a", "--init-video", gif, *flags,
                                                            "--out", str(tmp_path / "o")]), argv)
    out = capsys.readouterr().out
    assert (f"--init-video {gif}: {note} (frames evenly in time, bicubic)" in out) if note else "resampled" not in out
    said = [str(w.message) for w in recwarn if "stretched" in str(w.message)]
    assert said == ([f"--init-video {gif}: its {stretched}; crop the video to the output's aspect to keep its "
                     "proportions"] if stretched else [])


def test_base_scheduler_config_missing_is_said():
    with pytest.warns(UserWarning, match="the base model has none"):
        assert loading.scheduler_settings("base", {}) == dict(ORIGINAL_SCHEDULER_KWARGS)
    assert loading.scheduler_settings("base", {"beta_end": 0.02}) == {"beta_end": 0.02}


@pytest.mark.parametrize("impl,needs", [("cudnn", "cuDNN needs a GPU"), ("tpu_flash", "needs a TPU")])
def test_an_unavailable_attention_kernel_is_said_before_anything_is_traced(tmp_path, monkeypatch, recwarn, impl,
                                                                           needs):
    """Said at validation, every run: a run whose programs come from the compilation cache traces nothing,
    and the trace-time warning alone was missing there (a helper saw it only on the first run)."""
    import jax
    if jax.default_backend() in ("gpu", "tpu"):
        pytest.skip("needs a backend where the kernel cannot run")
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(attention_lib, "_warned", set())  # each CLI run is a new process
    stop_at_load(monkeypatch)  # stops before any model is built or traced
    with pytest.raises(Validated):
        sample.run(sample.build_parser().parse_args(argv := ["--prompt", "a", "--attention", impl,
                                                            "--out", str(tmp_path / "o")]), argv)
    said = [str(w.message) for w in recwarn if "unavailable" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(f"attention implementation {impl!r} unavailable (") and \
        needs in said[0] and said[0].endswith("using 'chunked' instead."), said
