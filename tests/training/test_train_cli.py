"""The training CLI end to end on a tiny diffusers base, one device per process: preemption (SIGTERM)
and a hard kill (SIGKILL) resume to the same final params as an uninterrupted run; exports are
written; bad input fails clearly."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from animatediff_jax import train
from animatediff_jax.training import checkpointing as ckpt
from tests.training import tiny

STEPS = 10
ONE_DEVICE = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny.write_base(tmp_path_factory.mktemp("base"))


def _launch(workdir, overrides):
    return subprocess.Popen([sys.executable, "-m", "animatediff_jax.train", "--workdir", str(workdir),
                             *overrides], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ONE_DEVICE)


def _run(workdir, overrides, signal_at: int | None = None, sig=None) -> tuple[int, str]:
    """Run the CLI; send `sig` when it reports step `signal_at`; (return code, whole log)."""
    proc, log = _launch(workdir, overrides), []
    for line in proc.stdout:
        log.append(line)
        if signal_at is not None and line.startswith(f"step {signal_at}/"):
            proc.send_signal(sig)
    return proc.wait(timeout=300), "".join(log)


def _latest(workdir):
    manager = ckpt.make_manager(os.path.join(workdir, "checkpoints"), 1, 3)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def test_sigterm_and_sigkill_resume_to_the_uninterrupted_result(base, tmp_path):
    overrides = tiny.base_overrides(base, max_train_steps=STEPS, checkpointing_steps=4)
    run, reference = tmp_path / "run", tmp_path / "reference"

    rc, log = _run(reference, overrides)
    assert rc == 0 and f"step {STEPS}/{STEPS}" in log, log[-3000:]

    rc, log = _run(run, overrides, 2, signal.SIGTERM)
    assert rc == 0, log[-3000:]
    stopped = int(log.split("SIGTERM: saved step ")[1].split(",")[0])
    assert 2 <= stopped < STEPS and _latest(run) == stopped            # a checkpoint at the current step

    rc, log = _run(run, overrides, 9, signal.SIGKILL)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert f"resumed from step {stopped}" in log
    assert stopped < _latest(run) < STEPS                               # killed between checkpoints

    killed_at = _latest(run)
    rc, log = _run(run, overrides)
    assert rc == 0 and f"resumed from step {killed_at}" in log, log[-3000:]
    weights = "motion_adapter/diffusion_pytorch_model.safetensors"
    ours, ref = load_file(str(run / weights)), load_file(str(reference / weights))
    assert ours.keys() == ref.keys() and len(ours) > 0
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    original = torch.load(run / "motion_module.ckpt", weights_only=True)
    assert any(k.endswith("temporal_transformer.proj_out.weight") for k in original)


def test_bad_input_is_a_clear_error(base, tmp_path, capsys):
    cfg = lambda **kw: train.load_config(None, tiny.base_overrides(base, **kw))
    with pytest.raises(SystemExit):
        train.main(["--workdir", str(tmp_path / "x"), "learning_rat=1"])
    assert "unknown config key 'learning_rat'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        train.train(cfg(mesh={"data": -1, "fsdp": 3, "tensor": 1}), str(tmp_path / "a"))
    with pytest.raises(ValueError, match="train_batch_size 6 does not divide"):
        train.train(cfg(train_batch_size=6), str(tmp_path / "b"))
    with pytest.raises(ValueError, match="dataset is empty"):
        train.train(cfg(train_data={"num_clips": 0}), str(tmp_path / "c"))


def test_non_finite_loss_stops_with_the_step_and_a_saved_state(base, tmp_path):
    # A base whose VAE emits NaN latents: the first step's loss is NaN.
    bad = tmp_path / "bad_base"
    shutil.copytree(base, bad)
    tensors = load_file(os.path.join(base, "vae", "diffusion_pytorch_model.safetensors"))
    tensors["quant_conv.bias"] = np.full_like(tensors["quant_conv.bias"], np.nan)
    save_file(tensors, str(bad / "vae" / "diffusion_pytorch_model.safetensors"))
    rc, log = _run(tmp_path / "nan", tiny.base_overrides(str(bad), max_train_steps=STEPS, checkpointing_steps=4))
    assert rc != 0
    assert "FloatingPointError: non-finite loss nan" in log and "at step 1; the state after step 0 is saved" in log
    assert _latest(tmp_path / "nan") == 0
