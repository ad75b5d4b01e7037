"""Every `python -m animatediff_jax.sample` flag and config value is checked before any model loads,
with one `error: <flag, key or file>: <problem>` line; sizes are checked against the models' own
geometry (the shipped miniature: VAE factor 4, 24-frame motion module, 2 text-encoder layers)."""
import os
import re
import textwrap
import warnings

import numpy as np
import pytest

from animatediff_jax import sample
from animatediff_jax.miniature.shipped import MINIATURE
from tests.sampling.stop_at_load import Validated, stop_at_load

MOTION = os.path.join(MINIATURE, "motion_module_B.safetensors")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    env.jobs = stop_at_load(monkeypatch)
    return env


def _error(capsys, argv, rc):
    assert sample.main(argv) == rc
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not os.path.exists("out"), "an output folder appeared before validation passed"
    return err


@pytest.mark.parametrize("flags,message", [
    (["--steps", "0"], "--steps: must be ≥ 1, got 0"),
    (["--frames", "0"], "--frames/--L: must be ≥ 1, got 0"),
    (["--width", "0"], "--width/--W: must be ≥ 1, got 0"),
    (["--H", "-32"], "--height/--H: must be ≥ 1, got -32"),
    (["--steps", "2.5"], "--steps: '2.5' is not an integer"),
    (["--guidance-scale", "nan"], "--guidance-scale: must be a finite number, got nan"),
    (["--guidance-scale", "inf"], "--guidance-scale: must be a finite number, got inf"),
    (["--guidance-scale", "-5"], "--guidance-scale: must be in [0, 100], got -5"),  # ran as if 1, silently
    (["--guidance-scale", "1e30"], "--guidance-scale: must be in [0, 100], got 1e+30"),  # flat grey videos, exit 0
    (["--motion-scale", "-1"], "--motion-scale: must be in [0, 100], got -1"),  # reversed the module's residual
    (["--fps", "0"], "--fps: must be in [0.01, 50], got 0"),
    (["--eta", "-0.5"], "--eta: must be in [0, 1], got -0.5"),
    (["--eta", "1.5"], "--eta: must be in [0, 1], got 1.5"),  # DDIM's noise would outgrow its variance: NaN
    (["--strength", "0"], "--strength: must be in (0, 1], got 0"),
    (["--strength", "1.5"], "--strength: must be in (0, 1], got 1.5"),
    (["--seed", "-2"], "--seed: must be -1 (random) or an integer in [0, 18446744073709551615], got -2"),
    (["--seed", str(2**64)], "--seed: must be -1 (random) or an integer in [0, 18446744073709551615]"),
    (["--clip-skip", "-1"], "--clip-skip: must be ≥ 0, got -1"),
    (["--batch-size", "0"], "--batch-size: must be ≥ 1, got 0"),
    (["--context-length", "0"], "--context-length: must be ≥ 1, got 0"),
    (["--freeinit-iters", "0"], "--freeinit-iters: must be ≥ 1, got 0"),
    (["--lora", "x.safetensors:nan"], "--lora: 'x.safetensors:nan': scale must be a finite number, got nan"),
    # scales far beyond any use: the video saturated (1e30: flat frames, exit 0) or overflowed into NaN
    (["--lora", "x.safetensors:1e30"], "--lora: 'x.safetensors:1e30': scale must be in [-100, 100], got 1e+30"),
    (["--motion-lora", "m.safetensors:-200"], "--motion-lora: 'm.safetensors:-200': scale must be in [-100, 100], got -200"),
    (["--domain-adapter", "a.ckpt:101"], "--domain-adapter: 'a.ckpt:101': scale must be in [-100, 100], got 101"),
    (["--sparsectrl", "s.ckpt:11"], "--sparsectrl: 's.ckpt:11': scale must be in [0, 10], got 11"),
    (["--motion-scale", "1e9"], "--motion-scale: must be in [0, 100], got 1e+09"),
    (["--motion-block-scales", "mid_block=101"], "--motion-block-scales: 'mid_block=101': factor must be in [0, 100], got 101"),
    (["--motion-version", "v4"], "--motion-version: invalid choice: 'v4'"),
    (["--out", ""], "--out: empty path"),
])
def test_never_valid_values_are_refused_at_parse_time(env, capsys, flags, message):
    err = _error(capsys, ["--prompt", "a cat", "--out", "out", *flags], 2)
    assert err == f"error: {message}\n" or message in err
    assert env.jobs == []


@pytest.mark.parametrize("flags,rc,message", [
    (["--width", "36"], 2, "error: --width/--height (W/H): must be positive multiples of 8, got 36x32"),
    (["--frames", "25"], 2, "error: --frames (L): 25 frames exceed the motion module's position encoding (24 frames)"),
    (["--frames", "32", "--context-length", "25"], 2, "error: --context-length (context_length): 25 exceeds"),
    (["--context-length", "4", "--context-stride", "8"], 2, "--context-length/--context-stride (context_length/"
                                                            "context_stride): context stride 8 > length 4"),
    (["--frames", "30", "--context-length", "2"], 2, "context stride 4 > length 2 would leave frames uncovered "
                                                     "(--context-stride not given: 4)"),
    (["--travel", "0:a", "--travel", "50:b", "--frames", "20"], 2,
     "error: --travel: prompt travel frame 50 is outside the video's 20 frames (0..19)"),
    (["--travel", "0:a", "--travel", "9:b", "--seed", "1", "--seed", "2", "--seed", "3"], 2,
     "--seed: 3 given for 2 videos (1 --prompt + 1 --travel)"),
    (["--clip-skip", "2"], 2, "--clip-skip/clip_skip: must be < 2 (the text encoder's layers), got 2"),
    (["--init-video", "missing.gif"], 1, "--init-video missing.gif: not found"),
    (["--strength", "0.01", "--init-video", MOTION], 2, "--strength: "),
    (["--strength", "0.5"], 2, "--strength/strength: applies only to video-to-video (give --init-video too)"),
    (["--scheduler-config", "missing.json"], 1, "--scheduler-config missing.json: not found (the flag takes "
                                                "'original', 'base' or a scheduler_config.json path)"),  # a file
    (["--scheduler", "euler", "--eta", "0.5"], 2, "scheduler settings"),
    pytest.param(["--scheduler", "euler", "--eta", "0.5", "--scheduler-config", "base"], 2, "scheduler settings",
                 marks=pytest.mark.filterwarnings("ignore:scheduler config 'base'")),  # none there: said (test_sample_notices)
])
def test_values_that_do_not_fit_the_models_are_refused_before_loading(env, capsys, flags, rc, message):
    err = _error(capsys, ["--prompt", "a cat", "--W", "32", "--H", "32", "--out", "out", *flags], rc)
    assert message in err
    assert env.jobs == []


def test_corrupt_init_video_and_bad_scheduler_json_name_the_file(env, capsys):
    open("junk.mp4", "wb").write(b"not a video at all")
    err = _error(capsys, ["--prompt", "x", "--init-video", "junk.mp4", "--out", "out"], 1)
    assert "--init-video junk.mp4: cannot read as a video (" in err and "Errno" not in err  # FFmpeg's words only
    for content, says in [(b"\xff\xfe{", "not UTF-8 text (byte 0xff at offset 0)"), (b"{oops", "not JSON ("),
                          (b"[1]", "must hold a JSON object, got list")]:
        open("sched.json", "wb").write(content)
        assert f"error: --scheduler-config sched.json: {says}" in _error(
            capsys, ["--prompt", "x", "--scheduler-config", "sched.json", "--out", "out"], 1)  # a file fault
    os.mkdir("sched_dir")
    assert _error(capsys, ["--prompt", "x", "--scheduler-config", "sched_dir", "--out", "out"], 1) == \
        "error: --scheduler-config sched_dir: a directory, not a scheduler_config.json file\n"


def test_strength_is_resolved_for_video_to_video_only(env, capsys, tmp_path):
    """Found by a stranger: --strength without --init-video was accepted and recorded as if it did
    something. Now it is refused; a video-to-video run without it records the default it used."""
    from PIL import Image
    frames = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save("in.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(Validated):
        sample.main(["--prompt", "x", "--init-video", "in.gif", "--out", "out"])
    assert env.jobs[-1].opts.strength == sample.DEFAULT_STRENGTH == 0.8
    with pytest.raises(Validated):
        sample.main(["--prompt", "x", "--init-video", "in.gif", "--strength", "0.3", "--out", "out"])
    assert env.jobs[-1].opts.strength == 0.3
    # a config.yaml of an earlier version recorded strength 0.8 for every run: it still re-runs
    with open("old.yaml", "w") as f:
        f.write(f"- prompt: [x]\n  motion_module: {MOTION}\n  sample_options: {{strength: 0.8, scheduler: ddim}}\n")
    with pytest.raises(Validated):
        sample.main(["old.yaml", "--base", os.path.join(MINIATURE, "base"), "--out", "out"])
    assert env.jobs[-1].opts.strength is None


def test_file_errors_name_the_flag_and_travel_frames_are_given_once(env, capsys):
    """Found by a stranger: a truncated --motion-module was reported by path alone; a key frame given
    twice to --travel silently dropped one prompt."""
    with open(MOTION, "rb") as f:
        open("bad.safetensors", "wb").write(f.read(1000))
    err = _error(capsys, ["--prompt", "x", "--motion-module", "bad.safetensors", "--out", "out"], 1)
    assert err.startswith("error: --motion-module bad.safetensors: truncated"), err  # the path as given
    err = _error(capsys, ["--travel", "0:a", "--travel", "0:b", "--out", "out"], 2)
    assert err == "error: --travel: frame(s) [0] given twice (one prompt per key frame)\n"


def test_latents_are_checked_against_the_models_geometry(env, capsys):
    """The miniature's VAE downsamples by 4 (not SD's 8): 32x32 pixels are 8x8 latents."""
    base = ["--prompt", "a cat", "--W", "32", "--H", "32", "--L", "4", "--out", "out", "--latents", "lat.npy"]
    np.save("lat.npy", np.zeros((1, 4, 4, 4, 4), np.float32))  # what a hard-coded factor 8 would ask for
    assert "--latents lat.npy: shape (1, 4, 4, 4, 4), this run needs (1, 4, 4, 8, 8) (batch, channels, frames, " \
           "height/4, width/4)" in _error(capsys, base, 2)
    np.save("lat.npy", np.zeros((1, 4, 4, 8, 8), np.float32))
    with pytest.raises(Validated):
        sample.main(base)
    assert env.jobs[0].latents.shape == (1, 4, 4, 8, 8)
    np.save("lat.npy", np.array([[None]], object), allow_pickle=True)
    assert "--latents lat.npy: not a numeric .npy array" in _error(capsys, base, 1)
    with open("lat.txt", "w") as f:
        f.write("0 1 2\n")
    assert _error(capsys, base[:-1] + ["lat.txt"], 1) == \
        "error: --latents lat.txt: not a .npy file (no NumPy array header)\n"
    assert _error(capsys, base[:-1] + ["missing.npy"], 1) == "error: --latents missing.npy: not found\n"
    np.savez("lat.npz", a=np.zeros(3))
    assert _error(capsys, base[:-1] + ["lat.npz"], 1) == \
        "error: --latents lat.npz: an .npz archive; give one .npy array\n"
    np.save("lat.npy", np.full((1, 4, 4, 8, 8), np.nan, np.float32))
    assert "--latents lat.npy: holds NaN or inf" in _error(capsys, base, 1)
    np.save("lat.npy", np.zeros((1, 4, 4, 8, 8), np.int64))
    assert "--latents lat.npy: dtype int64" in _error(capsys, base, 1)


def _config(text: str) -> str:
    with open("cfg.yaml", "w") as f:
        f.write(textwrap.dedent(text))
    return "cfg.yaml"


def test_config_mode_flags_override_entry_values_or_are_refused(env, capsys):
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          steps: 7
          W: 64
          clip_skip: 1
          seed: 3
          prompt: ["a cat"]
        """)
    base = [cfg, "--base", os.path.join(MINIATURE, "base"), "--H", "32", "--L", "4", "--out", "out"]
    with pytest.raises(Validated):
        sample.main(base)
    job = env.jobs.pop()
    assert (job.entry.steps, job.sizes["width"], job.clip_skip) == (7, 64, 1)  # the entry's values
    with pytest.raises(Validated):
        sample.main(base + ["--steps", "2", "--W", "32", "--clip-skip", "0"])
    job = env.jobs.pop()
    assert (job.entry.steps, job.sizes["width"], job.clip_skip) == (2, 32, 0)  # a given flag wins
    assert "--steps: must be ≥ 1, got 0" in _error(capsys, base + ["--steps", "0"], 2)  # never "not given"
    assert "--seed: not with a prompt config" in _error(capsys, base + ["--seed", "5"], 2)
    assert "--base: a prompt config needs" in _error(capsys, base[:1] + base[3:], 2)


def test_config_values_are_checked(env, capsys):
    base = ["--base", os.path.join(MINIATURE, "base"), "--W", "32", "--H", "32", "--L", "4", "--out", "out"]
    with open("bad-inference.yaml", "wb") as f:
        f.write("noise_scheduler_kwargs:\n  beta_schedule: \"línear\"\n".encode("latin-1"))
    cfg = _config(f"""
        - inference_config: bad-inference.yaml
          motion_module: "{MOTION}"
          prompt: ["a cat"]
        """)
    err = _error(capsys, [cfg, *base], 1)
    assert err.startswith(f"error: {os.path.realpath('bad-inference.yaml')}: inference config is not UTF-8 text")
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          clip_skip: -1
          prompt: ["a cat"]
        """)
    assert "cfg.yaml: entry 0: clip_skip must be an integer ≥ 0, got -1" in _error(capsys, [cfg, *base], 2)
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          prompt: ["a cat"]
          sample_options: {{eta: .nan, scheduler: ddim}}
        """)
    assert "cfg.yaml: entry 0: sample_options: --eta: must be a finite number, got nan" in _error(
        capsys, [cfg, *base], 2)
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          prompt: ["a cat"]
          sample_options: {{eta: 5, scheduler: ddim}}
        """)
    assert "cfg.yaml: entry 0: sample_options: --eta: must be in [0, 1], got 5" in _error(capsys, [cfg, *base], 2)
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          prompt: ["a cat"]
          sample_options: {{out: elsewhere}}
        """)
    assert "sample_options: unknown option 'out'" in _error(capsys, [cfg, *base], 2)
    cfg = _config(f"""
        - motion_module: "{MOTION}"
          prompt: ["a cat"]
          sample_options: {{context_length: true}}
        """)
    assert "cfg.yaml: entry 0: sample_options: context_length takes a number, name or path, not true" in _error(
        capsys, [cfg, *base], 2)
    for options, message in [("{context_length: 64}", "--context-length (context_length): 64 exceeds"),
                             ("{context_length: 8, context_stride: 20}", "--context-length/--context-stride "
                              "(context_length/context_stride): context stride 20 > length 8")]:
        cfg = _config(f"""
            - motion_module: "{MOTION}"
              prompt: ["a cat"]
              sample_options: {options}
            """)
        assert f"error: cfg.yaml: entry 0: {message}" in _error(capsys, [cfg, *base[:-4], "--L", "32", "--out", "out"], 2)


def test_window_settings_without_context_length_are_ignored_with_a_warning(env, capsys):
    base = ["--prompt", "a cat", "--W", "32", "--H", "32", "--out", "out"]
    message = ("--context-stride, --context-scope, --no-noise-shuffle (context_stride, context_scope, "
               "no_noise_shuffle): ignored without --context-length (no context windows)")
    with pytest.warns(UserWarning, match=re.escape(message)), pytest.raises(Validated):
        sample.main(base + ["--context-stride", "2", "--context-scope", "motion", "--no-noise-shuffle"])
    assert env.jobs.pop().context is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Validated):
            sample.main(base + ["--frames", "32", "--context-length", "16", "--context-scope", "motion"])
    context = env.jobs.pop().context
    assert (context.length, context.stride, context.weighting, context.scope, context.shuffle_noise) == \
        (16, 4, "pyramid", "motion", True)  # the unset settings: ContextOptions' defaults


def test_single_file_base_without_tokenizer_is_refused_before_conversion(env, capsys, tmp_path):
    from tests.sampling.tiny_models import write_dreambooth
    single = write_dreambooth(str(tmp_path / "sd15-like.safetensors"))
    err = _error(capsys, ["--base", single, "--prompt", "a cat", "--out", "out"], 2)
    assert err.startswith(f"error: --tokenizer: {single} carries no CLIP tokenizer")
    assert not os.path.exists(tmp_path / "cache" / "converted")  # nothing was converted
    os.mkdir("empty")
    err = _error(capsys, ["--base", single, "--tokenizer", "empty", "--prompt", "a cat", "--out", "out"], 1)
    assert err.startswith("error: --tokenizer empty: no CLIP tokenizer there")
    with open("notes.txt", "w") as f:  # not a model at all: said before the tokenizer it lacks
        f.write("hello")
    assert _error(capsys, ["--base", "notes.txt", "--prompt", "a cat", "--out", "out"], 1) == \
        "error: --base notes.txt: unknown checkpoint format (expected .safetensors, .ckpt, .bin, .pt)\n"
    for name, problem in (("noise.safetensors", "not a safetensors file (header length"),  # named like one:
                          ("noise.ckpt", "not a PyTorch checkpoint (neither a zip archive nor a pickle)")):  # content
        with open(name, "wb") as f:
            f.write(np.random.default_rng(0).bytes(5000))
        assert _error(capsys, ["--base", name, "--prompt", "a cat", "--out", "out"], 1).startswith(
            f"error: --base {name}: {problem}")
    # With one, validation goes on to plan the conversion from headers (nothing converted): this tiny
    # file's channels do not fit the GroupNorm groups a single file is assumed to have (SD1.x's 32).
    err = _error(capsys, ["--base", single, "--tokenizer", os.path.join(MINIATURE, "base", "tokenizer"), "--prompt",
                          "a cat", "--W", "64", "--H", "64", "--out", "out"], 1)
    assert err.startswith(f"error: --base {single}: ") and "cannot be built" in err and "norm groups" in err, err
    assert not os.path.exists(tmp_path / "cache" / "converted")  # validation reads headers only


def test_help_shows_each_default_once_and_the_module_command(capsys):
    with pytest.raises(SystemExit) as done:
        sample.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m animatediff_jax.sample ")
    assert "(default: None)" not in text and "(default 25) (default" not in text
    for block in text.split("\n  -"):
        assert block.count("default") <= 1, block
