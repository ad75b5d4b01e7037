"""The training CLI end to end: preemption (SIGTERM) and a hard kill (SIGKILL) resume to the same
final params as an uninterrupted run; bad input fails clearly."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from animatediff_jax import train
from animatediff_jax.training import checkpointing as ckpt
from animatediff_jax.training.config import load_config
from tests.training import tiny

STEPS = 12


def _launch(workdir, overrides):
    return subprocess.Popen([sys.executable, "-m", "animatediff_jax.train", "--workdir", str(workdir),
                             *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _signal_at(proc, step: int, sig) -> str:
    """Read the child's progress lines; send `sig` when it reports `step`; return its whole log."""
    log = []
    for line in proc.stdout:
        log.append(line)
        if line.startswith(f"step {step}/"):
            proc.send_signal(sig)
    proc.wait(timeout=120)
    return "".join(log)


def _latest(workdir):
    manager = ckpt.make_manager(os.path.join(workdir, "checkpoints"), 1, 3)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def test_sigterm_and_sigkill_resume_to_the_uninterrupted_result(tmp_path):
    tok = tiny.write_tokenizer(tmp_path / "tok")
    overrides = tiny.overrides(tok, max_train_steps=STEPS, checkpointing_steps=4)
    run = tmp_path / "run"

    proc = _launch(run, overrides)
    log = _signal_at(proc, 2, signal.SIGTERM)
    assert proc.returncode == 0, log[-3000:]
    stopped = int(log.split("SIGTERM: saved step ")[1].split(",")[0])
    assert 2 <= stopped < STEPS and _latest(run) == stopped            # checkpoint at the current step

    proc = _launch(run, overrides)
    log = _signal_at(proc, 10, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    assert f"resumed from step {stopped}" in log
    assert stopped <= _latest(run) < STEPS                              # killed between checkpoints

    resumed = train.train(load_config(None, overrides), str(run))
    reference = train.train(load_config(None, overrides), str(tmp_path / "reference"))
    assert resumed["step"] == reference["step"] == STEPS
    for a, b in zip(train.jax.tree.leaves(resumed["params"]), train.jax.tree.leaves(reference["params"])):
        np.testing.assert_array_equal(a, b)
    for name in ("motion_module.ckpt", "motion_adapter/config.json", "tensorboard"):
        assert os.path.exists(tmp_path / "reference" / name), name


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    tok = tiny.write_tokenizer(tmp_path / "tok")
    cfg = lambda **kw: load_config(None, tiny.overrides(tok, **kw))
    with pytest.raises(SystemExit):
        train.main(["--workdir", str(tmp_path / "x"), "learning_rat=1"])
    assert "unknown config key 'learning_rat'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        train.train(cfg(mesh={"data": -1, "fsdp": 3, "tensor": 1}), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="train_batch_size 6 does not divide"):
        train.train(cfg(train_batch_size=6), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="dataset is empty"):
        train.train(cfg(train_data={"num_clips": 0}), str(tmp_path / "c"))
    # A learning rate of 1e30 blows the zero-initialised proj_out up in step 1: step 2's loss is inf.
    with pytest.raises(FloatingPointError, match="non-finite loss .* at step 2; the state after step 1 is saved"):
        train.train(cfg(learning_rate=1e30, checkpointing_steps=100), str(tmp_path / "nan"))
    assert _latest(tmp_path / "nan") == 1
