"""A run killed (SIGKILL) while its final validation samples were rendered, then re-run with the same
command: the re-run wrote the exports (or said 'nothing to train' when they were there) and never rendered
the final step's samples, nor said they were missing; a partial samples folder (some GIFs, no grid) stayed."""
import json
import os

import pytest

from animatediff_jax import train
from animatediff_jax.training import trainer, validation
from tests.training import tiny

VALIDATE = 'validation_data={"prompts": ["a b", "c"], "num_inference_steps": 1, "video_length": 4}'
SAMPLES = ["00.gif", "01.gif", "grid.gif", "prompts.json"]


class Killed(BaseException):
    """Stands for SIGKILL: raised mid-render, caught by nothing (no `except Exception` cleans up after it)."""


def test_a_run_killed_in_its_final_validation_renders_the_samples_when_rerun(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), *tiny.overrides(tiny.write_tokenizer(tmp_path / "tok")),
            "export_formats=[diffusers]", "validation_steps_tuple=[3]", VALIDATE]
    folder = workdir / "samples" / "step-3"

    def killed(*a, **k):
        raise Killed
    with monkeypatch.context() as m:
        m.setattr(validation, "write_grid", killed)  # the prompts' GIFs written, the grid not
        with pytest.raises(Killed):
            train.main(argv)
    assert "3" in os.listdir(workdir / "checkpoints") and not (workdir / "motion_adapter").exists()
    assert not (workdir / "samples").exists() or os.listdir(workdir / "samples") == [], \
        os.listdir(workdir / "samples")  # the step's folder is written whole or not at all
    capsys.readouterr()

    assert train.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "validation: the samples of step 3 are missing (the run stopped while rendering them); rendering them " \
           "from its checkpoint" in out, out
    assert out[-1] == (f"already finished: step 3 of 3 (max_train_steps); its validation samples (missing) rendered "
                       f"from that checkpoint: {folder}; its exports (missing or from an earlier step) written from "
                       f"that checkpoint: {workdir}/motion_adapter"), out
    assert sorted(os.listdir(folder)) == SAMPLES
    assert json.loads((workdir / "exports.json").read_text()) == {"step": 3, "files": ["motion_adapter"]}

    # The exports written, the samples folder partial (an earlier version wrote it file by file): only the
    # samples are rendered again, whole.
    for name in ("grid.gif", "prompts.json"):
        os.remove(folder / name)
    with monkeypatch.context() as m:
        m.setattr(trainer, "export", lambda *a, **k: pytest.fail("exported again"))
        assert train.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"already finished: step 3 of 3 (max_train_steps); its validation samples (missing) rendered from that "
        f"checkpoint: {folder}")
    assert sorted(os.listdir(folder)) == SAMPLES

    with monkeypatch.context() as m:
        m.setattr(trainer, "setup_mesh", lambda *a: pytest.fail("built the mesh"))  # all there now
        assert train.main(argv) == 0
    assert capsys.readouterr().out == "already finished: step 3 of 3 (max_train_steps); nothing to train\n"
