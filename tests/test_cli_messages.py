"""The messages a user sees for bad seeds, travel frames, fps, and YAML files that cannot be used: one
`error: <flag or file>: <problem>` line that states the real bound or the real problem, before any
model loads; every YAML the project reads (prompt, inference, SparseCtrl and training configs) fails
the same way (`animatediff_jax.yaml_file`)."""
import os
import re

import pytest

from animatediff_jax import sample
from animatediff_jax.errors import InputError
from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.sample_control import config_overrides
from animatediff_jax.sample_flags import build_parser
from animatediff_jax.sampling.prompt_config import inference_config, load_prompt_config
from animatediff_jax.training.config import load_config
from tests.sampling.stop_at_load import Validated, stop_at_load

SEED_MAX = "18446744073709551615"  # 2**64 - 1
SMALL = ["--W", "32", "--H", "32", "--L", "4", "--out", "out"]


@pytest.fixture
def jobs(tmp_path, monkeypatch):
    """The jobs that passed validation (none load a model); the working directory is tmp_path."""
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return stop_at_load(monkeypatch)


def error_line(capsys, argv, rc) -> str:
    """The one error line `sample.main(argv)` prints (exit code `rc`), without `error: ` and newline."""
    assert sample.main(argv) == rc
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not os.path.exists("out"), "an output folder appeared before validation passed"
    return err.removeprefix("error: ").removesuffix("\n")


def validates(argv) -> bool:
    with pytest.raises(Validated):
        sample.main(argv)
    return True


# ----------------------------------------------------------------------------- 1. seeds

@pytest.mark.parametrize("seed", ["99999999999999999999999", str(2**64), "-2"])
def test_seed_bound_stated_is_the_real_one(jobs, capsys, seed):
    assert error_line(capsys, ["--prompt", "a", "--seed", seed, *SMALL], 2) == \
        f"--seed: must be -1 (random) or an integer in [0, {SEED_MAX}], got {seed}"


def test_the_largest_seed_stated_is_accepted(jobs):
    assert validates(["--prompt", "a", "--seed", SEED_MAX, *SMALL])
    assert jobs[0].entry.seeds == [2**64 - 1]


def test_prompt_config_seed_states_the_same_bound(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f'- prompt: ["a"]\n  seed: {2**64}\n')
    with pytest.raises(ValueError, match=rf"c\.yaml: entry 0: seed\[0\] must be -1 \(random\) or an integer in "
                                         rf"\[0, {SEED_MAX}\], got {2**64}$"):
        load_prompt_config(path)
    path.write_text(f'- prompt: ["a"]\n  seed: {SEED_MAX}\n  random_seed: [{2**64}]\n')
    with pytest.raises(ValueError, match=rf"random_seed\[0\] must be an integer in \[0, {SEED_MAX}\], got"):
        load_prompt_config(path)
    path.write_text(f'- prompt: ["a"]\n  seed: {SEED_MAX}\n')
    assert load_prompt_config(path)[0].seeds == [2**64 - 1]


# ----------------------------------------------------------------------------- 2. travel frames

@pytest.mark.parametrize("travel,message", [
    ("-1:a dog", "frame must be an integer ≥ 0 (0 is the first frame), got -1"),
    ("1.5:a dog", "frame '1.5' is not an integer (expected FRAME:PROMPT, e.g. 8:a dog running)"),
    ("a dog", "expected FRAME:PROMPT, e.g. 8:a dog running"),
], ids=["negative", "not an integer", "no colon"])
def test_travel_frame_problem_is_named(jobs, capsys, travel, message):
    assert error_line(capsys, [f"--travel={travel}", *SMALL], 2) == f"--travel: {travel!r}: {message}"


def test_a_travel_frame_beyond_a_given_frames_flag_names_the_flag(jobs, capsys, tmp_path):
    """A stranger's --frames 8 under a prompt_map with a key 8 was blamed on the config alone."""
    config = tmp_path / "travel.yaml"
    config.write_text('- prompt_map: {0: "a", 8: "b"}\n')
    base = ["--base", os.path.join(MINIATURE, "base"), "--W", "32", "--H", "32", "--out", "out"]
    assert error_line(capsys, [str(config), *base, "--frames", "8"], 2) == (
        f"--frames 8: {config}: entry 0: prompt travel frame 8 is outside the video's 8 frames (0..7)")
    config.write_text('- prompt_map: {0: "a", 8: "b"}\n  L: 8\n')  # the config's own L: the config is named
    assert error_line(capsys, [str(config), *base], 2) == (
        f"{config}: entry 0: prompt travel frame 8 is outside the video's 8 frames (0..7)")
    assert validates([str(config), *base, "--frames", "9"])


def test_negative_values_are_values_not_flags(jobs, capsys):
    # argparse's own rule took `-1e30` and `-1:a dog` for flags: "expected one argument"
    assert error_line(capsys, ["--guidance-scale", "-1e30", *SMALL], 2) == \
        "--guidance-scale: must be in [0, 100], got -1e+30"  # the value's problem, not "expected one argument"
    assert error_line(capsys, ["--travel", "-1:a dog", *SMALL], 2) == \
        "--travel: '-1:a dog': frame must be an integer ≥ 0 (0 is the first frame), got -1"
    assert error_line(capsys, ["--steps", "-.5", *SMALL], 2) == "--steps: '-.5' is not an integer"


def test_no_prompt_with_the_value_none_is_not_a_contradiction(jobs, capsys):
    """`--motion-module none` is a model flag: the message must not say prompts 'go only with none'."""
    assert error_line(capsys, ["--motion-module", "none"], 2) == (
        "--prompt: no prompt (--motion-module given: model flags need --prompt or --travel; the miniature's "
        "own prompts are used only when no model flag is given)")


def test_a_variant_no_input_holds_is_one_warning_before_the_work(jobs, capsys):
    """`--variant fp99` with the miniature (converted files: no variants) was silently ignored."""
    assert validates(["--variant", "fp99", *SMALL])
    assert capsys.readouterr().err == ("warning: --variant fp99: no input read holds weights of that variant; "
                                       "the plain weights were used\n")
    assert validates(SMALL) and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- 5. fps

def test_fps_is_limited_to_what_a_gif_shows(jobs, capsys, tmp_path):
    line = error_line(capsys, ["--prompt", "a", "--fps", "1000", *SMALL], 2)
    assert line.startswith("--fps: must be at most 50, got 1000 (a GIF stores frame delays in whole 1/100 s")
    assert validates(["--prompt", "a", "--fps", "50", *SMALL])
    config = tmp_path / "c.yaml"
    config.write_text('- prompt: ["a"]\n  sample_options: {fps: 60}\n')
    line = error_line(capsys, [str(config), "--base", os.path.join(MINIATURE, "base"), *SMALL], 2)
    assert line.startswith(f"{config}: entry 0: sample_options: --fps: must be at most 50, got 60 (a GIF")


# ----------------------------------------------------------------------------- 6. --dreambooth

def test_dreambooth_help_names_what_is_accepted(jobs):
    help_text = " ".join(build_parser().format_help().split())
    assert "(single file)" not in help_text
    assert "single file, diffusers folder (or hub id) or converted folder" in help_text
    assert validates(["--dreambooth", os.path.join(MINIATURE, "dreambooth"), "--prompt", "a", *SMALL])


# ----------------------------------------------------------------------------- 3, 4. YAML files

# (file content or None for a directory, the problem after `<path>: <role> `)
BAD_FILES = [
    (None, "is a directory, not a YAML file"),
    ("a: [1\nb: 2\n", "is not valid YAML: line 2, column 2: expected ',' or ']', but got ':' "
                      "(while parsing a flow sequence from line 1, column 4)"),
    ('a: "open\n', "is not valid YAML: line 2, column 1: found unexpected end of stream "
                   "(while scanning a quoted scalar from line 1, column 4)"),
    ("a: 1\x01\n", "is not valid YAML: character 5: unacceptable character #x0001 "
                   "(special characters are not allowed)"),
    (b"a: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 6)"),
    ("a: 1\nb:\n  c: 2\n  <<: {d: 1}\n  c: 3\n", "is not valid YAML: line 5, column 3: duplicate key 'c' (first on line 3)"),
    ("", "is empty (no YAML content)"),
    ("# only a comment\n", "is empty (no YAML content)"),
]
BAD_FILE_IDS = ["directory", "unclosed bracket", "unclosed quote", "control character", "latin-1", "duplicate key", "empty",
                "comment only"]


def bad_file(tmp_path, content):
    path = tmp_path / "bad.yaml"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("content,problem", BAD_FILES, ids=BAD_FILE_IDS)
def test_prompt_config_file_problems_are_one_line(jobs, capsys, tmp_path, content, problem):
    path = bad_file(tmp_path, content)
    assert error_line(capsys, [str(path), *SMALL], 1) == f"{path}: prompt config {problem}"


@pytest.mark.parametrize("content,problem", [
    ("", "is empty (no YAML content)"),
    ("hello\n", "must be a YAML list or mapping of entries, got a str"),
    ("[]\n", "has no entries"),
    ("{}\n", "has no entries"),
], ids=["empty", "a word", "empty list", "empty mapping"])
def test_prompt_config_that_is_no_config_is_an_input_error(jobs, capsys, tmp_path, content, problem):
    """An empty file and one that holds no entries are the same kind of fault: the same exit code and shape."""
    path = bad_file(tmp_path, content)
    assert error_line(capsys, [str(path), "--base", os.path.join(MINIATURE, "base"), *SMALL], 1) == \
        f"{path}: prompt config {problem}"


@pytest.mark.parametrize("content,problem", BAD_FILES, ids=BAD_FILE_IDS)
def test_inference_config_file_problems_are_one_line(jobs, capsys, tmp_path, content, problem):
    path = bad_file(tmp_path, content)
    config = tmp_path / "c.yaml"
    config.write_text(f'- prompt: ["a"]\n  inference_config: "{path}"\n')
    assert error_line(capsys, [str(config), "--base", os.path.join(MINIATURE, "base"), *SMALL], 1) == \
        f"{path}: inference config {problem}"


@pytest.mark.parametrize("content,problem", BAD_FILES, ids=BAD_FILE_IDS)
def test_training_and_sparsectrl_config_file_problems_are_one_line(tmp_path, content, problem):
    path = bad_file(tmp_path, content)
    with pytest.raises(InputError) as e:
        load_config(str(path))
    assert str(e.value) == f"{path}: training config {problem}"
    with pytest.raises(InputError) as e:
        config_overrides(str(path))
    assert str(e.value) == f"{path}: SparseCtrl inference config (controlnet_config) {problem}"


def test_missing_unreadable_and_non_mapping_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(InputError, match=f"^{re.escape(str(missing))}: prompt config not found$"):
        load_prompt_config(missing)
    with pytest.raises(InputError, match=f"^{re.escape(str(missing))}: training config not found$"):
        load_config(str(missing))
    (tmp_path / "file").write_text("a: 1\n")
    below_a_file = str(tmp_path / "file" / "c.yaml")
    with pytest.raises(InputError) as e:
        inference_config(below_a_file)
    assert str(e.value) == f"{below_a_file}: cannot read the inference config (Not a directory)"
    listed = str(tmp_path / "list.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(InputError) as e:
        inference_config(listed)
    assert str(e.value) == f"{listed}: inference config must be a YAML mapping (key: value lines), got a list"


def test_numbers_in_exponent_notation_are_numbers_as_in_omegaconf(tmp_path):
    """A stranger's `guidance_scale: 75e-1` was refused ('must be a number, got str'): PyYAML reads `1e-3`
    as a string, OmegaConf (the original AnimateDiff's reader) as a float."""
    config = tmp_path / "c.yaml"
    values = {"guidance_scale": "75e-1", "motion_scale": "1e-3", "lora_alpha": "[5E-1]", "adapter_lora_scale": "1.5e0"}
    config.write_text('- prompt: ["a"]\n  lora_model_path: "l.safetensors"\n'
                      + "".join(f"  {k}: {v}\n" for k, v in values.items()))
    (tmp_path / "l.safetensors").write_bytes(b"")
    (entry,) = load_prompt_config(config)
    assert (entry.guidance_scale, entry.motion_scale, entry.adapter_lora_scale) == (7.5, 0.001, 1.5)
    assert [a for _, a in entry.loras] == [0.5]
    config.write_text('- prompt: ["1e3", 2e3x]\n')  # only whole scalars are numbers
    assert load_prompt_config(config)[0].prompts == ["1e3", "2e3x"]


def test_an_error_during_a_progress_bar_starts_its_own_line(capsys):
    """`convert merge` failing mid-write printed `error: ...` onto its progress bar's line: the bar lived
    in a generator the error left suspended, closed (and cleared) only after the message."""
    from tqdm.auto import tqdm
    from animatediff_jax.errors import run_cli

    def work():
        def tensors():
            for k in tqdm(range(4), desc="merging", leave=False, mininterval=0):
                yield k
        it = tensors()
        next(it)
        raise InputError("b.safetensors: broken")
    assert run_cli(work) == 1
    err = capsys.readouterr().err
    assert "merging" in err and err.endswith("error: b.safetensors: broken\n")
    bar_then_error = err[:-len("error: b.safetensors: broken\n")]
    assert bar_then_error.endswith("\r"), repr(err)  # the bar's line cleared before the message
