"""`evaluate --shared-noise`: a share of the initial noise common to all frames (the diagnostic of what
decides the miniature's motion, issue 15); 0, the default, is the sampler's own noise."""
import numpy as np
import pytest

from animatediff_jax import evaluate
from animatediff_jax.sampling.pipeline import initial_noise


class _Pipe:  # what `evaluate.initial_noise` reads of a pipeline
    vae_scale = 8

    class unet:
        class config:
            in_channels = 4


def test_no_shared_noise_is_the_pipelines_own_noise():
    seeds = [3, 5]
    own = evaluate.initial_noise(_Pipe, seeds, 16, 0.0)
    assert np.array_equal(own, np.asarray(initial_noise(seeds, (16, 4, 4, 4))))


def test_a_shared_share_correlates_the_frames_by_that_share():
    seeds = list(range(64))
    for share in (0.5, 0.9):
        x = evaluate.initial_noise(_Pipe, seeds, 16, share)
        assert x.shape == (64, 16, 4, 4, 4) and x.dtype == np.float32
        assert abs(x.std() - 1) < 0.02
        corr = np.corrcoef(x[:, 0].ravel(), x[:, 7].ravel())[0, 1]  # two frames of the same videos
        assert abs(corr - share) < 0.05, (share, corr)
    same = evaluate.initial_noise(_Pipe, seeds[:2], 16, 1.0)
    assert np.array_equal(same[:, 0], same[:, 15])


@pytest.mark.parametrize("argv, line", [
    (["--shared-noise", "1.5"], "error: --shared-noise: must be in [0, 1], got 1.5\n"),
    (["--shared-noise", "-0.1"], "error: --shared-noise: must be in [0, 1], got -0.1\n"),
    (["--shared-noise", "nan"], "error: --shared-noise: must be a finite number, got nan\n"),
    (["--shared-noise", "half"], "error: --shared-noise: 'half' is not a number\n"),
    (["--guidance", "-3"], "error: --guidance: must be in [0, 100], got -3\n"),  # was sampled
    (["--guidance", "1e300"], "error: --guidance: must be in [0, 100], got 1e+300\n"),  # NaN videos scored
    (["--guidance", "inf"], "error: --guidance: must be a finite number, got inf\n")])
def test_a_bad_number_is_one_line(argv, line, capsys):
    assert evaluate.main(argv) == 2
    assert capsys.readouterr().err == line


def test_the_measuring_command_names_the_share():
    args = evaluate.build_parser().parse_args(["--shared-noise", "0.5", "--rows", "base + module"])
    assert evaluate.command(args) == ("python -m animatediff_jax.evaluate --samples 32 --steps 25 --guidance 7.5 "
                                      "--shared-noise 0.5 --rows 'base + module'")
    assert "--shared-noise" not in evaluate.command(evaluate.build_parser().parse_args([]))


class _NaNPipe(_Pipe):  # a pipeline whose videos come out NaN although its weights are finite
    description = {"dtype": "float32"}
    unet_params = vae_params = text_params = {"w": np.ones(2, np.float32)}

    def __call__(self, prompts, **_):
        class Result:
            frames = np.full((len(prompts), 16, 32, 32, 3), np.nan, np.float32)
        return Result


def test_a_nan_video_is_refused_not_scored():
    """A stranger's --guidance 1e300 gave NaN videos that were scored (0% … 0%, domain fidelity 100%)."""
    with pytest.raises(evaluate.InputError, match=r"^prompt 'a red circle': the video came out NaN/inf although "
                                                  r"every weight is finite: the computation overflows"):
        evaluate.sample(_NaNPipe(), ["a red circle"], [0], 16, 2, 7.5)
