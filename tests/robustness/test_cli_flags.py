"""Command-line mistakes, in every CLI alike (issue 13/14, a stranger's findings): one line
`error: <flag>: <problem>` with exit code 2 from the shared parser (`errors.ArgumentParser` inside
`run_cli`), never argparse's usage block; integer flags refuse values that would overflow (int32)
naming the flag."""
import os
import subprocess
import sys

import pytest

from animatediff_jax import evaluate, sample, train
from animatediff_jax.errors import ArgumentParser
from animatediff_jax.miniature import probe
from convert.__main__ import main as convert_main

CLIS = {"animatediff_jax.sample": [], "animatediff_jax.train": ["--workdir", "w"], "animatediff_jax.evaluate": [],
        "animatediff_jax.miniature.build": [], "animatediff_jax.miniature.probe": [],
        "animatediff_jax.data.build": ["procedural", "--data_dir", "d", "--name", "n"],
        "animatediff_jax.data.precompute": ["--source", "s", "--pretrained_model_path", "p", "--data_dir", "d",
                                            "--name", "n"],
        "convert": ["inspect", "f"]}  # with the flags each requires (argparse reports missing ones first)
HUGE = "99999999999"


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module", CLIS)
def test_an_unknown_flag_is_one_line_naming_it(module):
    done = _cli(module, *CLIS[module], "--no-such-flag", "1")
    assert done.returncode == 2, done.stderr
    command = " ".join([module] + [a for a in CLIS[module][:1] if not a.startswith("-")])  # a subcommand's own help
    assert done.stderr.splitlines() == [f"error: --no-such-flag: unknown flag (see python -m {command} --help)"]
    missing = _cli(module, *CLIS[module][:-2]) if CLIS[module] else None
    if missing is not None:
        assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
        assert missing.stderr.startswith("error: ") and missing.stderr.rstrip().endswith(": required")


@pytest.mark.parametrize("args,line", [
    (["merge", "o.safetensors", "a", "--weigths", "1"], "error: --weigths: unknown flag; did you mean --weights?"),
    # only the given subcommand's flags are suggestions (was 'did you mean --quiet?', a flag of merge, then not lora)
    (["lora", "a", "b", "--lora", "l.safetensors", "--add-diference"], "error: --add-diference: unknown flag (see "
                                                                      "python -m convert lora --help)"),
    (["export-unet", "a", "b", "-q"], "error: -q: unknown flag (see python -m convert export-unet --help)"),
    (["merge", "o.safetensors", "a", "--weights", "x"], "error: --weights: invalid float value: 'x'"),
    (["merge"], "error: output, inputs: required"),
    (["frobnicate"], "error: <command>: invalid choice: 'frobnicate' (choose from 'base', 'merge', 'inspect', "
                     "'export-unet', 'motion', 'lora', 'motion-lora', 'export-motion', 'export-motion-lora', 'controlnet')"),
    (["motion", "a", "b", "--heads", HUGE], f"error: --heads: must be ≤ 2147483647, got {HUGE}"),
    # scales as sample's: they fused, printed a finished progress bar, then failed on 70 NaN/Inf tensors
    (["lora", "a", "b", "--lora", "l.safetensors:1e30"],
     "error: --lora: 'l.safetensors:1e30': scale must be in [-100, 100], got 1e+30"),
    (["motion-lora", "a", "b.safetensors", "--lora", "m.safetensors:abc"],
     "error: --lora: 'm.safetensors:abc': scale 'abc' is not a number"),
])
def test_convert_flag_errors(capsys, args, line):
    assert convert_main(args) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_evaluate_flag_errors(capsys):
    for args, line in ((["--samples", "x"], "error: --samples: 'x' is not an integer"),
                       (["--samples", HUGE], f"error: --samples: must be ≤ 4096, got {HUGE}"),
                       (["--steps", "0"], "error: --steps: must be ≥ 1, got 0"),
                       (["--sample", "3", "--rows"], "error: --rows: expected one argument")):
        assert evaluate.main(args) == 2
        assert capsys.readouterr().err.splitlines() == [line]


SAMPLE_INTEGER_FLAGS = ["--steps", "--frames", "--width", "--height", "--clip-skip", "--context-length",
                        "--context-stride", "--freeinit-iters", "--decode-chunk", "--batch-size"]


@pytest.mark.parametrize("flag", SAMPLE_INTEGER_FLAGS)
def test_sample_integer_flags_name_themselves_on_overflow(capsys, flag):
    assert sample.main([flag, HUGE]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {flag}") and line.endswith(f": must be ≤ {8192 if flag in ('--width', '--height') else 2147483647}, got {HUGE}")


def test_sample_single_dash_flag_is_unknown_not_a_config_path(capsys):
    assert sample.main(["-W", "32"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: -W: unknown flag; did you mean --W?"]


def test_sample_steps_beyond_the_schedule_name_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    assert sample.main(["--steps", "5000", "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("--steps/steps: must be ≤ 1000 (the scheduler's num_train_timesteps), got 5000")


def test_integer_type_bounds():
    parse = ArgumentParser.integer(1, 10)
    assert parse("10") == 10
    for text, problem in (("0", "must be ≥ 1, got 0"), ("11", "must be ≤ 10, got 11"), ("1.5", "'1.5' is not an integer")):
        with pytest.raises(Exception, match=problem):
            parse(text)


@pytest.mark.parametrize("cli,argv,flag", [
    ("sample", ["--motion-module", ""], "--motion-module"),   # sampled with the default module
    ("sample", ["--dreambooth", ""], "--dreambooth"),         # sampled without it
    ("sample", ["--base", ""], "--base"),                     # sampled the miniature
    ("sample", ["--tokenizer", ""], "--tokenizer"),           # '--tokenizer : not found'
    ("sample", ["--lora", ":0.5"], "--lora"),
    ("sample", ["--init-video", ""], "--init-video"),
    ("sample", [""], "config"),                               # the default run
    ("convert", ["motion", "", "o.safetensors"], "source"),   # ': no such file or folder'
    ("convert", ["merge", "m.safetensors", "a", ""], "inputs"),
    ("convert", ["lora", "b", "o", "--lora", ""], "--lora"),
    ("convert", ["inspect", ""], "files"),
    ("train", ["--config", "", "--workdir", "w"], "--config"),  # trained on the built-in defaults
    ("probe", ["--weights", ""], "--weights"),                 # read ./base
])
def test_an_empty_input_path_is_refused_naming_the_flag(tmp_path, monkeypatch, capsys, cli, argv, flag):
    """A third stranger: an empty path was taken as 'not given' by several flags (a different run,
    silently) and named as ': no such file' by convert's positional inputs."""
    monkeypatch.chdir(tmp_path)
    main = {"sample": sample.main, "convert": convert_main, "train": train.main, "probe": probe.main}[cli]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: ") and err.endswith("empty path\n") and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("main,args", [
    (sample.main, []), (convert_main, ["motion", "m.safetensors", "o.safetensors"]),
    (convert_main, ["base", "m.ckpt", "out"]), (convert_main, ["inspect", "f"]),
    (convert_main, ["controlnet", "c.safetensors", "o.safetensors"])])
@pytest.mark.parametrize("value,problem", [("", "empty variant"), ("fp16/../x", "'fp16/../x': not a weight variant "
                                                                   "(letters, digits and '_', e.g. fp16)")])
def test_a_variant_that_names_no_weights_file_is_refused(main, args, value, problem, capsys):
    """`sample --variant ''` was accepted (and fell back to the plain weights); a variant is the word in
    diffusion_pytorch_model.<variant>.safetensors."""
    assert main([*args, "--variant", value]) == 2
    assert capsys.readouterr().err == f"error: --variant: {problem}\n"
    if main is convert_main:  # sample takes no --revision (hub ids are resolved by the cache)
        assert main([*args, "--revision", " "]) == 2
        assert capsys.readouterr().err == "error: --revision: empty revision\n"
