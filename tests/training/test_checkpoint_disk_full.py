"""A checkpoint save that fails (disk full) stops the run in one line; partial step folders go."""
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from animatediff_jax.errors import OutputError
from animatediff_jax.training import checkpointing
from tests.training import tiny

# Orbax's own file writes (the array metadata) raising ENOSPC inside a step's partial folder, as on a
# full disk: no root needed for a tmpfs. TensorStore's writes (C++) stay real.
FULL_DISK = textwrap.dedent("""
    import errno, os
    from orbax.checkpoint._src.path import async_path

    write_text = async_path.write_text

    async def full(path, text, *args, **kwargs):
        if any(part in str(path) for part in os.environ["FULL_DISK_AT"].split(",")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await write_text(path, text, *args, **kwargs)
    async_path.write_text = full
""")


@pytest.fixture
def full_disk_at(monkeypatch):
    """Make orbax's writes into the partial folders of the given steps fail with ENOSPC (in this process)."""
    def at(*steps):
        monkeypatch.setenv("FULL_DISK_AT", ",".join(f"/{s}.orbax-checkpoint-tmp/" for s in steps))
        exec(FULL_DISK, {})  # noqa: S102 -- the same patch the subprocess test runs
    from orbax.checkpoint._src.path import async_path
    monkeypatch.setattr(async_path, "write_text", async_path.write_text)  # undone after the test
    return at


def test_a_failed_save_is_one_output_error_naming_the_kept_step_and_its_partial_folder_goes(tmp_path,
                                                                                            full_disk_at):
    directory = tmp_path / "checkpoints"
    manager = checkpointing.make_manager(str(directory), 1, 3)
    state = {"w": np.ones((4, 4), np.float32)}
    full_disk_at(2)
    assert checkpointing.save(manager, 1, state, {"step": 1})
    assert checkpointing.save(manager, 2, state, {"step": 2})
    with pytest.raises(OutputError) as raised:
        checkpointing.wait(manager)
    assert str(raised.value) == (f"{directory}: saving checkpoint 2 failed (disk full: No space left on device); "
                                 "training stopped, the state after step 1 is kept: make room, then the same "
                                 "command resumes from it")
    manager.close()
    assert sorted(os.listdir(directory)) == ["1"]


def test_a_first_save_that_fails_says_nothing_is_saved(tmp_path, full_disk_at):
    directory = tmp_path / "checkpoints"
    manager = checkpointing.make_manager(str(directory), 1, 3)
    full_disk_at(1)
    with pytest.raises(OutputError, match=r"checkpoint 1 failed \(disk full: .*\); training stopped, nothing saved"):
        checkpointing.save_now(manager, 1, {"w": np.ones(3, np.float32)}, {"step": 1})
    manager.close()
    assert os.listdir(directory) == []


def test_a_partial_step_folder_of_a_killed_run_is_removed_when_the_manager_opens(tmp_path, capfd, caplog):
    """A `kill -9` during step 2's save left `2.orbax-checkpoint-tmp` (5.5 MB at the miniature's size) for
    good; a later save of step 2 removed it with a raw absl warning."""
    directory = tmp_path / "checkpoints"
    state = {"w": np.ones(3, np.float32)}
    manager = checkpointing.make_manager(str(directory), 1, 3)
    checkpointing.save_now(manager, 1, state, {"step": 1})
    manager.close()
    shutil.copytree(directory / "1", directory / "2.orbax-checkpoint-tmp")  # a step's folder before its rename

    manager = checkpointing.make_manager(str(directory), 1, 3)
    checkpointing.save_now(manager, 3, state, {"step": 3})
    manager.close()
    assert sorted(os.listdir(directory)) == ["1", "3"]
    assert capfd.readouterr().err == "" and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_training_run_whose_save_fills_the_disk_stops_with_one_line(tmp_path):
    """On a full disk the step-3 save printed ~1,900 lines of absl/asyncio tracebacks and no `error:` line,
    training went on to the end, exited 1 without a summary and left `checkpoints/3.orbax-checkpoint-tmp`."""
    workdir = tmp_path / "run"
    overrides = tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"), max_train_steps=6, checkpointing_steps=2,
                               export_formats=["diffusers"])
    script = FULL_DISK + "import runpy, sys; sys.argv[1:] = sys.argv[2:]; " \
                         "runpy.run_module('animatediff_jax.train', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", script, "--", "--workdir", str(workdir), *overrides],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "FULL_DISK_AT": "/4.orbax-checkpoint-tmp/"})
    directory = workdir / "checkpoints"
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr == (f"error: {directory}: saving checkpoint 4 failed (disk full: No space left on device); "
                           "training stopped, the state after step 2 is kept: make room, then the same command "
                           "resumes from it\n"), done.stderr[-3000:]
    assert "done:" not in done.stdout, done.stdout
    assert sorted(os.listdir(directory)) == ["1", "2"]  # orbax saves the first step too
