"""The training CLI end to end on a tiny diffusers base, one device per process: preemption (SIGTERM),
a hard kill (SIGKILL) and a corrupt latest checkpoint all resume to the same final params as an
uninterrupted run; exports are written; bad input and a non-finite loss stop with one clear line."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import optax
import pytest
import torch
from safetensors.numpy import load_file, save_file

from animatediff_jax import train
from animatediff_jax.errors import UsageError
from animatediff_jax.training import checkpointing as ckpt
from animatediff_jax.training import trainer
from animatediff_jax.training.config import load_config
from tests.training import tiny
from tests.utils import xla_flags

STEPS = 10
ONE_DEVICE = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
    """This module's runs compile the same train step: they share JAX's persistent compilation cache (as
    a resumed run does with `compilation_cache_dir`), so only the first one compiles it."""
    ONE_DEVICE["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    del ONE_DEVICE["JAX_COMPILATION_CACHE_DIR"]


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


def _steps(workdir) -> list[int]:
    manager = ckpt.make_manager(os.path.join(workdir, "checkpoints"), 1, 3)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def _latest(workdir):
    return (_steps(workdir) or [None])[-1]


def _truncate_largest_file(folder) -> str:
    """Cut the largest file under `folder` to half its length (a write cut short); its path."""
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def _assert_same_export(run, reference):
    weights = "motion_adapter/diffusion_pytorch_model.safetensors"
    ours, ref = load_file(str(run / weights)), load_file(str(reference / weights))
    assert ours.keys() == ref.keys() and len(ours) > 0
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_sigterm_and_sigkill_resume_to_the_uninterrupted_result(base, tmp_path):
    overrides = tiny.base_overrides(base, max_train_steps=STEPS, checkpointing_steps=4)
    run, reference = tmp_path / "run", tmp_path / "reference"

    rc, log = _run(reference, overrides)
    assert rc == 0 and f"step {STEPS}/{STEPS}" in log, log[-3000:]
    # the (long, silent) first compile is announced, then timed, before the first step's line
    assert log.index("compiling the train step (batch ") < log.index("compiled in ") < log.index("step 1/"), log

    rc, log = _run(run, overrides, 2, signal.SIGTERM)
    assert rc == 143 and "done:" not in log, log[-3000:]                # preempted: not a finished run
    stopped = int(log.split("SIGTERM: saved step ")[1].split(",")[0])
    assert 2 <= stopped < STEPS and _latest(run) == stopped            # a checkpoint at the current step

    rc, log = _run(run, overrides, 9, signal.SIGKILL)
    assert rc == -signal.SIGKILL, log[-3000:]
    assert f"resumed from step {stopped}" in log
    assert stopped < _latest(run) < STEPS                               # killed between checkpoints

    # The same interrupted run once more, its latest checkpoint's data cut short (as by a kill mid-write).
    *_, previous, killed_at = _steps(run)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run, corrupt)
    _truncate_largest_file(corrupt / "checkpoints" / str(killed_at) / "state")

    rc, log = _run(run, overrides)
    assert rc == 0 and f"resumed from step {killed_at}" in log, log[-3000:]
    _assert_same_export(run, reference)

    rc, log = _run(run, overrides)                                      # finished: nothing to train
    assert rc == 0 and f"already finished: step {STEPS} of {STEPS} (max_train_steps); nothing to train" in log
    assert "nan" not in log and "done:" not in log, log[-3000:]

    rc, log = _run(corrupt, overrides)
    assert rc == 0 and f"resumed from step {previous}" in log, log[-3000:]
    warnings = [line for line in log.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"checkpoints/{killed_at}: cannot be restored" in warnings[0], log[-3000:]
    assert "Traceback" not in log
    assert (corrupt / "checkpoints" / f"{killed_at}.corrupt").is_dir() and _latest(corrupt) == STEPS
    _assert_same_export(corrupt, reference)
    original = torch.load(run / "motion_module.ckpt", weights_only=True)
    assert any(k.endswith("temporal_transformer.proj_out.weight") for k in original)


def test_bad_input_is_a_clear_error(base, tmp_path, capsys):
    cfg = lambda **kw: load_config(None, tiny.base_overrides(base, **kw))  # noqa: E731
    assert train.main(["--workdir", str(tmp_path / "x"), "learning_rat=1"]) == 2
    assert capsys.readouterr().err == "error: learning_rat: unknown config key (did you mean learning_rate?)\n"
    with pytest.raises(UsageError, match="does not divide the 8 devices"):
        trainer.train(cfg(mesh={"data": -1, "fsdp": 3, "tensor": 1}), str(tmp_path / "a"))
    assert train.main(["--workdir", str(tmp_path / "b"), *tiny.base_overrides(base, train_batch_size=6)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train_batch_size 6 does not divide") and err.count("\n") == 1, err
    with pytest.raises(UsageError, match="^train_data.num_clips: must be >= 1"):
        cfg(train_data={"num_clips": 0})


def test_loss_non_finite_at_step_2_stops_with_one_line_and_the_saved_step_1(base, tmp_path, monkeypatch, capsys):
    # An update that blows the weights up in step 1 (as learning_rate=1e30 did, before the config bounded the
    # rate at 1), so step 2's loss is not finite. Step 1 is already saved (checkpointing_steps=1): the stop
    # must not try to save it again.
    make = trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda *a, **k: optax.chain(make(*a, **k), optax.scale(1e30)))
    workdir = tmp_path / "run"
    rc = train.main(["--workdir", str(workdir),
                     *tiny.base_overrides(base, max_train_steps=STEPS, checkpointing_steps=1, train_batch_size=8)])
    out = capsys.readouterr()
    log = out.out + out.err
    assert rc == 1 and "step 1/" in log and "step 2/" not in log and "Traceback" not in log, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: step 2: non-finite loss "), log[-3000:]
    assert f"the state after step 1 is saved in {workdir / 'checkpoints'}" in errors[0]
    assert _steps(workdir) == [1]


def test_non_finite_loss_stops_with_the_step_and_a_saved_state(base, tmp_path):
    # A base whose VAE emits NaN latents: the first step's loss is NaN.
    bad = tmp_path / "bad_base"
    shutil.copytree(base, bad)
    tensors = load_file(os.path.join(base, "vae", "diffusion_pytorch_model.safetensors"))
    tensors["quant_conv.bias"] = np.full_like(tensors["quant_conv.bias"], np.nan)
    save_file(tensors, str(bad / "vae" / "diffusion_pytorch_model.safetensors"))
    rc, log = _run(tmp_path / "nan", tiny.base_overrides(str(bad), max_train_steps=STEPS, checkpointing_steps=4))
    assert rc == 1 and "Traceback" not in log, log[-3000:]
    assert "error: step 1: non-finite loss nan" in log and "the state after step 0 is saved" in log
    assert _latest(tmp_path / "nan") == 0
