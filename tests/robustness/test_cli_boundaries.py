"""What a stranger's first hour found at the command-line boundaries: model flags without --base, the
base model's own size, SIGTERM mid-run, outputs written by libraries with their own modes, flags of
convert motion, evaluate's and build's outputs checked before any work, exports that lose settings."""
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from animatediff_jax import evaluate, sample
from animatediff_jax.miniature import build, stages
from animatediff_jax.miniature.shipped import MINIATURE, read_record
from animatediff_jax.outputs import atomic_folder, atomic_path
from animatediff_jax.params import flatten
from animatediff_jax.loading import load_motion
from convert.motion import load_motion_module
from convert.__main__ import main as convert_main
from tests.sampling.stop_at_load import Validated
from tests.sampling.test_sample_cli_values import env  # noqa: F401 - the fixture

MOTION = os.path.join(MINIATURE, "motion_module_B.safetensors")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_model_flags_alone_build_on_the_miniature_at_its_own_size(env, capsys):  # noqa: F811
    with pytest.raises(Validated):
        sample.main(["--motion-module", MOTION, "--prompt", "a red circle moving left", "--L", "4", "--out", "out"])
    job = env.jobs.pop()
    assert job.model["base"] == os.path.join(MINIATURE, "base")
    assert (job.sizes["width"], job.sizes["height"]) == (32, 32)  # UNet sample_size 8 x VAE factor 4, not 512
    with pytest.raises(Validated):
        sample.main(["--base", os.path.join(MINIATURE, "base"), "--prompt", "x", "--L", "4", "--W", "64", "--out", "o"])
    assert env.jobs.pop().sizes == dict(width=64, height=32, frames=4)
    assert sample.main(["--width", "1000000"]) == 2
    assert "--width/--W: must be ≤ 8192, got 1000000" in capsys.readouterr().err


def test_sigterm_unwinds_and_removes_what_was_being_written(tmp_path):
    out = tmp_path / "result.bin"
    code = ("import os, signal, time\n"
            "from animatediff_jax.errors import run_cli\n"
            "from animatediff_jax.outputs import atomic_path\n"
            "def work():\n"
            f"    with atomic_path({str(out)!r}) as tmp:\n"
            "        open(tmp, 'wb').write(b'half')\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "        time.sleep(30)\n"
            "raise SystemExit(run_cli(work))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip() == "error: terminated (SIGTERM)"
    assert os.listdir(tmp_path) == []  # neither the output nor its temporary file


def test_outputs_get_the_umask_modes_even_when_a_writer_makes_its_own_file(tmp_path):
    old = os.umask(0o022)
    try:
        def write_0600(path):
            os.unlink(path)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # as safetensors' save_file does
        with atomic_path(str(tmp_path / "a.safetensors")) as tmp:
            write_0600(tmp)
        with atomic_folder(str(tmp_path / "folder")) as tmp:
            open(os.path.join(tmp, "w.safetensors"), "w").close()
            write_0600(os.path.join(tmp, "w.safetensors"))
    finally:
        os.umask(old)
    for f in (tmp_path / "a.safetensors", tmp_path / "folder" / "w.safetensors"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f


@pytest.mark.parametrize("flag", ["--heads", "--norm-groups", "--max-seq-length"])
def test_convert_motion_refuses_nonsense_numbers(tmp_path, capsys, flag):
    assert convert_main(["motion", MOTION, str(tmp_path / "x.safetensors"), flag, "-5"]) == 2
    assert capsys.readouterr().err == f"error: {flag}: must be ≥ 1, got -5\n"
    assert not os.listdir(tmp_path)


def test_export_to_the_original_format_keeps_or_names_what_the_format_cannot_show(tmp_path, capsys):
    """The original format has no heads/groups (its loaders assume 8/32; the miniature has 4/16): an
    original-format .safetensors keeps them in its metadata and loads back equal; a pickle cannot,
    so the export says how to convert it back (a stranger's run sampled such a file silently wrong)."""
    out = tmp_path / "mm.safetensors"
    assert convert_main(["export-motion", MOTION, str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~_umask()
    back, ours = load_motion_module(str(out)), load_motion(MOTION, str(tmp_path / "cache"))
    assert (back.config.num_attention_heads, back.config.norm_num_groups) == (4, 16)
    assert back.config == ours.config
    for path, leaf in flatten(ours.params).items():
        np.testing.assert_array_equal(np.asarray(flatten(back.params)[path]), np.asarray(leaf))
    pytest.importorskip("torch")
    assert convert_main(["export-motion", MOTION, str(tmp_path / "mm.ckpt")]) == 0
    err = capsys.readouterr().err
    assert "stores neither heads nor GroupNorm groups" in err and "--heads 4 --norm-groups 16" in err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_evaluate_and_build_check_their_outputs_before_any_work(tmp_path, capsys):
    assert evaluate.main(["--results", str(tmp_path), "--samples", "1", "--steps", "1"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}")
    assert evaluate.main(["--samples", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --samples: must be ≥ 1, got 0"
    assert evaluate.main(["--samples", str(evaluate.MAX_SAMPLES + 1)]) == 2  # not memory without bound
    assert capsys.readouterr().err.strip() == f"error: --samples: must be ≤ {evaluate.MAX_SAMPLES}, got {evaluate.MAX_SAMPLES + 1}"
    (tmp_path / "afile").write_text("x")
    assert build.main(["--out", str(tmp_path / "afile"), "--stages", "tokenizer"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert np.array_equal(sorted(os.listdir(tmp_path)), ["afile"])


def test_evaluate_refuses_an_existing_results_file_without_overwrite(tmp_path, capsys, monkeypatch):
    """`--results RESULTS.md` replaced the measured table silently; every other output needs --overwrite."""
    results = tmp_path / "RESULTS.md"
    results.write_text("the measured table")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("sampled"))
    assert evaluate.main(["--results", str(results), "--samples", "1", "--steps", "1"]) == 1
    assert capsys.readouterr().err == f"error: {results}: already exists; pass --overwrite to replace it\n"
    assert results.read_text() == "the measured table"
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: [])
    assert evaluate.main(["--results", str(results), "--samples", "1", "--steps", "1", "--overwrite"]) == 0
    assert results.read_text().startswith("# Miniature AnimateDiff: measured results")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"vae": 3}'])
def test_a_damaged_build_record_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, content):
    weights = tmp_path / "weights"
    shutil.copytree(os.path.join(MINIATURE, "base"), weights / "base")
    (weights / "build.json").write_text(content)
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("sampled"))
    assert evaluate.main(["--weights", str(weights), "--rows", "base images", "--results", "-"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights / 'build.json'}: not a ") and err.count("\n") == 1, err
    monkeypatch.setattr(stages, "STAGE_FUNCTIONS", {})  # no stage may start
    assert build.main(["--out", str(weights), "--stages", "tokenizer"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {weights / 'build.json'}: not a ")
    assert (weights / "build.json").read_text() == content


def test_a_build_record_with_notes_is_read(tmp_path):
    record = {"seeds": {"vae": 0}, "vae": {"budget": "full", "steps": 600}, "carried_over": "vae copied from X",
              "motion": {"schedules": {"B": {"steps": 4000}}}}
    (tmp_path / "build.json").write_text(json.dumps(record))
    assert read_record(str(tmp_path)) == record and read_record(str(tmp_path / "none")) == {}


def test_evaluate_rows_must_name_rows_and_the_table_records_its_command(tmp_path, capsys):
    for empty in ("", " ; "):
        assert evaluate.main(["--rows", empty, "--results", "-"]) == 2
        assert capsys.readouterr().err.startswith(f"error: --rows {empty!r}: no row names")
    assert evaluate.main(["--rows", "lora + module;", "--results", "-"]) == 2  # a trailing ';' names no row
    assert capsys.readouterr().err.startswith("error: --rows: unknown row(s) ['lora + module']; did you mean "
                                              "['LoRA + module']?; rows are [")
    args = evaluate.build_parser().parse_args(
        ["--samples", "2", "--steps", "3", "--rows", "base images;LoRA images", "--weights", str(tmp_path)])
    assert evaluate.command(args) == (f"python -m animatediff_jax.evaluate --samples 2 --steps 3 --guidance 7.5 "
                                      f"--weights {tmp_path} --rows 'base images;LoRA images'")
    assert evaluate.command(evaluate.build_parser().parse_args([])) == \
        "python -m animatediff_jax.evaluate --samples 32 --steps 25 --guidance 7.5"


def test_the_results_file_names_the_weights_relative_to_itself(tmp_path, monkeypatch):
    """A stranger's `--results RESULTS.md --weights some/relative/dir` recorded the path relative to the
    working directory, meaningless next to RESULTS.md elsewhere."""
    (tmp_path / "work" / "weights").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    results = str(tmp_path / "out" / "RESULTS.md")
    args = evaluate.build_parser().parse_args(["--weights", "weights", "--results", results])
    assert evaluate.command(args).endswith("--weights ../work/weights")
    text = evaluate.report([], "weights", 25, 7.5, 1.0, evaluate.command(args), results)
    assert "Weights: ../work/weights, relative to this file's folder (build budget" in text
    shipped = evaluate.report([], evaluate.MINIATURE, 25, 7.5, 1.0, results_file=results)
    assert "Weights: the shipped animatediff_jax/assets/miniature (build budget" in shipped


@pytest.mark.parametrize("argv", [
    ["animatediff_jax.sample", "--out", "gs://bucket/samples"],
    ["convert", "export-motion", "mm.ckpt", "gs:/bucket/adapter"],
    ["animatediff_jax.data.build", "procedural", "--data_dir", "s3://bucket/tfds", "--name", "p"],
    ["animatediff_jax.miniature.build", "--out", "gs://bucket/mini"],
])
def test_a_url_given_as_a_local_output_is_refused_before_any_work(tmp_path, argv):
    """gs://bucket/x (or gs:/bucket, a slash missing) as an output made a local folder named 'gs:' after the
    work; only train --workdir writes to Cloud Storage (tests/training/test_remote_workdir.py)."""
    done = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not a local path (a URL would be written here, as a folder named" in done.stderr
    assert os.listdir(tmp_path) == []
