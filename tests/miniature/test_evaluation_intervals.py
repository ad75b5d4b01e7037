"""The evaluation table's 95% confidence intervals (issue 15: "with confidence intervals"), and which
rows it samples."""
import shutil
import sys

import numpy as np
import pytest
from scipy import stats

from animatediff_jax import evaluate
from animatediff_jax.errors import InputError
from animatediff_jax.miniature.shipped import MINIATURE


def _weights(tmp_path, schedules=("B",)):
    """A weights folder holding the shipped base (whole: the rows check it) and empty motion-module files
    of `schedules` (only their presence is checked before sampling)."""
    weights = tmp_path / "w"
    shutil.copytree(f"{MINIATURE}/base", weights / "base")
    for schedule in schedules:
        (weights / f"motion_module_{schedule}.safetensors").write_bytes(b"")
    return weights


def test_yes_no_scores_get_wilson_intervals():
    for k, n in ((16, 32), (0, 32), (32, 32), (3, 40), (2, 2)):
        low, high = evaluate.interval([1.0] * k + [0.0] * (n - k))
        want = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")  # scipy as the reference
        assert abs(low - want.low) < 1e-6 and abs(high - want.high) < 1e-6, (k, n)
    assert evaluate.interval([1.0] * 32)[0] > 0.89  # 32 of 32 cannot claim more than ~90%


def test_fraction_intervals_hold_the_mean_never_collapse_and_narrow_with_samples():
    rng = np.random.default_rng(3)
    small, large = rng.uniform(0.4, 1.0, 32), rng.uniform(0.4, 1.0, 512)
    low, high = evaluate.interval(small)
    assert low < small.mean() < high
    large_low, large_high = evaluate.interval(large)
    assert large_high - large_low < (high - low) / 2
    low, high = evaluate.interval([1.0, 1.0])  # two videos, both fully consistent: no certainty
    assert high == 1.0 and low < 0.5
    low, high = evaluate.interval([0.75] * 32)
    assert low < 0.75 < high


def test_a_cell_shows_the_mean_and_its_interval():
    row = {"name": "r", "module": "B", "samples": 32, "seeds": "0..31"}
    scores = {key: (0.5, 0.25, 0.75) for key in evaluate.METRICS}
    line = evaluate.format_row({**row, **scores, "motion": None})
    assert line.startswith("| r | B | 32 | 0..31 | – | 50% (25–75) |") and line.count("50% (25–75)") == 5


def test_rows_whose_files_are_missing_are_refused_before_sampling(tmp_path, capsys):
    """Found by a stranger: a row whose motion module was never built failed after the rows before it
    had been sampled, and the work was lost."""
    weights = _weights(tmp_path)
    rows = "base + module;base + module (schedule A)"
    assert evaluate.main(["--weights", str(weights), "--rows", rows, "--results", "-"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no motion_module_A.safetensors, which row 'base + module (schedule A)' needs" in err


def test_by_default_rows_without_their_files_are_left_out_and_named(tmp_path, capsys):
    """A build that trained schedule B only (as the shipped one): the ablation rows are left out with
    one line each, not an error; with no base at all nothing can be sampled."""
    weights = _weights(tmp_path)
    rows = evaluate.available_rows(str(weights))
    assert [r.name for r in rows] == ["base + module", "base, no module", "base images"]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(evaluate.ROWS) - 3 and all(line.startswith("left out: no ") for line in out)
    assert any("motion_module_A.safetensors, which row 'base + module (schedule A)' needs" in line for line in out)
    (weights / "base" / "unet.safetensors").unlink()
    with pytest.raises(InputError, match="no row can be sampled"):
        evaluate.available_rows(str(weights))


def test_a_model_folder_lacking_a_network_is_refused_before_any_work(tmp_path, capsys):
    """Found by a stranger: a dreambooth/ folder without vae.safetensors failed only when its row was
    loaded, after the scoring classifiers had been fitted and the rows before it sampled."""
    weights = _weights(tmp_path)
    shutil.copytree(weights / "base", weights / "dreambooth")
    (weights / "dreambooth" / "vae.safetensors").unlink()
    assert evaluate.main(["--weights", str(weights), "--rows", "base + module;DreamBooth + module",
                          "--results", "-"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: --weights {weights}: {weights / 'dreambooth'}: an incomplete converted SD1.x folder: vae.safetensors "
                   "is missing; row 'DreamBooth + module' needs it whole (built by the dreambooth stage of python "
                   "-m animatediff_jax.miniature.build); or leave the row out with --rows\n")
    (weights / "base" / "text_encoder.safetensors").write_bytes(b"not a safetensors file")
    left_out = [r.name for r in evaluate.ROWS if evaluate.missing_file(str(weights), r)]
    assert left_out == [r.name for r in evaluate.ROWS]  # every row needs the base
    assert "text_encoder.safetensors" in evaluate.missing_file(str(weights), evaluate.ROWS[0])


def test_an_empty_weights_path_is_one_line(tmp_path, monkeypatch, capsys):
    """`--weights ''` read ./base (of whatever folder the command ran in) or said '--weights : no miniature
    weights here'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    assert evaluate.main(["--weights", ""]) == 2
    assert capsys.readouterr().err == "error: --weights: empty path\n"


@pytest.mark.parametrize("cli", ["evaluate", "probe"])
def test_a_weights_path_that_is_no_build_says_which_way(tmp_path, capsys, cli):
    """A stranger's `evaluate --weights FILE` and `--weights MISSING` both said 'no miniature weights here';
    probe said 'not a miniature build' (its own check). One check now, saying what is wrong."""
    from animatediff_jax.miniature import probe
    main = dict(evaluate=evaluate.main, probe=probe.main)[cli]
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "half" / "base").mkdir(parents=True)
    for name, what in (("missing", "does not exist"), ("file.txt", "is a file, not the folder a miniature build writes"),
                       ("half", f"not a miniature build (no {tmp_path / 'half' / 'base' / 'tokenizer'})")):
        assert main(["--weights", str(tmp_path / name)]) == 1
        assert capsys.readouterr().err == (f"error: --weights {tmp_path / name}: {what}; python -m "
                                           "animatediff_jax.miniature.build writes one\n")


def test_progress_is_told_on_stderr_before_each_row(monkeypatch, capsys):
    """evaluate printed nothing for the first ~27 s (classifiers, reference rows, the first row's sampling)."""
    def logged(name):
        def step(*args, **kwargs):
            print(f"<{name}>", file=sys.stderr)
            return {key: (0.5, 0.4, 0.6) for key in evaluate.METRICS}
        return step

    monkeypatch.setattr(evaluate.scoring.Judges, "fit", logged("fit"))
    monkeypatch.setattr(evaluate, "dataset_row", lambda count, judges: logged("dataset")())
    monkeypatch.setattr(evaluate, "vae_rows", lambda *args: [])
    monkeypatch.setattr(evaluate, "load_pipeline", lambda row, weights: None)
    monkeypatch.setattr(evaluate, "sample", logged("sample"))
    monkeypatch.setattr(evaluate, "score_row", lambda *args: {key: (0.5, 0.4, 0.6) for key in evaluate.METRICS})
    evaluate.evaluate("w", samples=2, rows=evaluate.ROWS[:1] + evaluate.ROWS[6:7])
    assert capsys.readouterr().err.splitlines() == [
        "[evaluate] fitting the scoring classifiers; scoring 2 dataset clips and 2 images per domain through the "
        "VAE (reference rows) ...", "<fit>", "<dataset>",
        "[evaluate] row 1/2 'base + module': sampling 2 videos of 16 frames ...", "<sample>",
        "[evaluate] row 2/2 'base images': sampling 2 images ...", "<sample>"]
