"""A train step that does not fit in memory: the built-in defaults (256² x 16 frames x 4 clips) on a
CPU host compiled for a minute, then died in the first step with XLA's RESOURCE_EXHAUSTED traceback.
The compiled step's memory is now checked against what the platform has before the first step, and an
out-of-memory error at a step or in validation sampling is one line saying what to lower."""
import os

import jax
import pytest

from animatediff_jax import memory_estimate, train
from animatediff_jax.training import metrics, step_memory, validation
from animatediff_jax.training.config import load_config
from tests.training import tiny

OOM = "RESOURCE_EXHAUSTED: Out of memory allocating 138834772408 bytes."


@pytest.fixture
def overrides(tmp_path):
    return tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"), export_formats=["diffusers"])


def test_a_step_larger_than_the_host_is_one_line_before_it_runs(overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory_estimate, "host_available", lambda *a, **k: 2**20)
    monkeypatch.setattr(metrics.MetricsLogger, "step", lambda *a, **k: pytest.fail("a step ran"))
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: the train step needs ~") and err.count("\n") == 1, err
    assert (f"GiB per device x {jax.local_device_count()} devices, this host has 0.0 GiB available: lower "
            "train_data.sample_size (32), train_batch_size (8) or train_data.sample_n_frames (4), raise "
            "gradient_accumulation_steps (1), or set gradient_checkpointing=true\n") in err, err
    assert "compiled in" not in out and not workdir.exists(), out


def test_the_advice_names_only_what_can_help(overrides):
    cfg = load_config(None, overrides + ["image_finetune=true", "gradient_accumulation_steps=8",
                                         "gradient_checkpointing=true"])
    assert step_memory.step_memory_advice(cfg) == "lower train_data.sample_size (32) or train_batch_size (8)"


def _out_of_memory_at_call(monkeypatch, n: int) -> None:
    """The n-th call of a compiled program (the train step's) raises XLA's out-of-memory error."""
    calls, call = [], jax.stages.Compiled.__call__

    def oom(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise jax.errors.JaxRuntimeError(OOM)
        return call(self, *args, **kwargs)
    monkeypatch.setattr(jax.stages.Compiled, "__call__", oom)


def test_a_step_out_of_memory_is_one_line_naming_the_saved_step(overrides, tmp_path, monkeypatch, capsys):
    _out_of_memory_at_call(monkeypatch, 3)  # checkpointing_steps 2: step 2 is saved
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides]) == 2
    err = capsys.readouterr().err
    assert err == ("error: step 3: the train step ran out of memory: lower train_data.sample_size (32), "
                   "train_batch_size (8) or train_data.sample_n_frames (4), raise gradient_accumulation_steps "
                   "(1), or set gradient_checkpointing=true; the state after step 2 is saved in "
                   f"{workdir / 'checkpoints'}\n"), err
    assert max(map(int, os.listdir(workdir / "checkpoints"))) == 2


def test_a_first_step_out_of_memory_leaves_no_folder(overrides, tmp_path, monkeypatch, capsys):
    _out_of_memory_at_call(monkeypatch, 1)
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: step 1: the train step ran out of memory: lower ") and \
        err.endswith("; no step is saved\n") and err.count("\n") == 1, err
    assert not workdir.exists(), sorted(os.listdir(workdir))


def test_validation_out_of_memory_saves_the_step_and_is_one_line(overrides, tmp_path, monkeypatch, capsys):
    def oom(self, *a, **k):
        raise jax.errors.JaxRuntimeError(OOM)
    monkeypatch.setattr(validation.Validator, "__call__", oom)
    workdir = tmp_path / "run"
    assert train.main(["--workdir", str(workdir), *overrides, "validation_steps=1",
                       'validation_data={"prompts": ["a b", "c"], "num_inference_steps": 1}']) == 2
    err = capsys.readouterr().err
    assert err == ("error: step 1: validation sampling ran out of memory: lower validation_data.width (32), "
                   "validation_data.height (32) or validation_data.video_length (4), or give fewer "
                   f"validation_data.prompts (2); the state after step 1 is saved in {workdir / 'checkpoints'}\n"), err
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1"]


def test_other_runtime_errors_keep_their_traceback():
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        with step_memory.out_of_memory("step 1: the train step", "lower it", lambda: pytest.fail("said saved")):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")
