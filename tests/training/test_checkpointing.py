"""Resuming from the newest readable checkpoint when the newest one is cut short."""
import gc
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.training import checkpointing

# In a process of its own: orbax's abandoned per-array reads are finalized whenever the interpreter
# collects them (at the latest at exit), and what the user sees is the whole process's stderr.
SCRIPT = textwrap.dedent("""
    import gc, os, sys
    import jax, jax.numpy as jnp
    from animatediff_jax.training import checkpointing

    directory = sys.argv[1]
    # Random values, so the array data (not the JSON metadata) is the largest file and compression cannot
    # hide a truncation; several arrays, so reads are still pending when the first one fails.
    state = {f"w{i}": jax.random.normal(jax.random.key(i), (128, 64 + i), jnp.float32) for i in range(40)}
    manager = checkpointing.make_manager(directory, 1, 3)
    for step in (1, 2):
        checkpointing.save(manager, step, state, {"step": step})
        manager.wait_until_finished()
    manager.close()
    files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(directory, "2", "state")) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)

    manager = checkpointing.make_manager(directory, 1, 3)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restored, meta = checkpointing.restore_latest(
        manager, checkpointing.abstract(state, jax.tree.map(lambda _: device, state)))
    manager.close()
    gc.collect()             # as a training run's allocations would, sooner or later
    assert meta == {"step": 1} and all(bool(jnp.array_equal(restored[k], state[k])) for k in state)
    print("restored")
""")


def test_a_cut_short_checkpoint_is_set_aside_with_one_line_and_nothing_else(tmp_path):
    directory = tmp_path / "checkpoints"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(directory)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0 and done.stdout == "restored\n", done.stderr[-3000:]
    # One warning line naming the step folder and TensorStore's reason; no "Exception ignored in:
    # <coroutine ...>" tracebacks from orbax's other reads of the same checkpoint.
    assert done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert done.stderr.startswith(f"warning: {directory / '2'}: cannot be restored (OUT_OF_RANGE: Error reading ")
    assert f"moved to {directory / '2'}.corrupt, resuming from step 1\n" in done.stderr
    assert sorted(os.listdir(directory)) == ["1", "2.corrupt"]


class _Pending:
    """An awaitable that suspends its awaiter once (as a read waiting on TensorStore)."""

    def __await__(self):
        yield


def _suspended(name, message="Encountered error while reading array index: (slice(0, 2, 1),)"):
    """A coroutine named `name` suspended in an await, written as orbax's `_read_array_index_and_device_put`
    is: any BaseException (also the GeneratorExit of being closed when collected) becomes a new Exception."""
    async def read():
        try:
            await _Pending()
        except BaseException as e:
            raise Exception(message) from e
    read.__qualname__ = read.__name__ = name
    coroutine = read()
    coroutine.send(None)
    return coroutine


def test_only_the_abandoned_reads_reports_are_silenced(monkeypatch):
    reported, excepted, thread_excepted = [], [], []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    monkeypatch.setattr(sys, "excepthook", lambda *a: excepted.append(a[1]))
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_excepted.append(args.exc_value))
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "filters", [])
    checkpointing._silence_abandoned_reads.__wrapped__()     # the process-wide install, undone after the test

    _suspended("_read_array_index_and_device_put")           # collected at once
    _suspended("other", "a bug of ours")
    gc.collect()
    assert [u.object.__qualname__ for u in reported] == ["other"]

    closed, other = RuntimeError("Event loop is closed"), ValueError("a bug of ours")
    for error in (closed, other):
        sys.excepthook(type(error), error, None)
        threading.excepthook(threading.ExceptHookArgs((type(error), error, None, None)))
    assert excepted == [other] and thread_excepted == [other]

    def record(message, exc=None):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None,
                                 (type(exc), exc, None) if exc else None)
    wrapped = Exception("Encountered error while reading array index: (slice(0, 2, 1),)")
    wrapped.__cause__ = ValueError("OUT_OF_RANGE: Error reading")
    assert not asyncio_log.filter(record("Future exception was never retrieved", wrapped))
    assert not asyncio_log.filter(record("Task was destroyed but it is pending! task: <Task coro="
                                         "<_read_array_index_and_device_put() running at serialization.py:328>>"))
    assert asyncio_log.filter(record("Future exception was never retrieved", other))
    opening = ValueError('DATA_LOSS: Error opening "cast" driver: Error decoding manifest [tensorstore_spec=\'{}\']')
    assert not asyncio_log.filter(record("Future exception was never retrieved", opening))
    sys.excepthook(type(opening), opening, None)  # raised, not abandoned: still reported
    assert excepted == [other, opening]


def test_orbax_wait_warning_is_dropped_and_only_it(tmp_path, monkeypatch, caplog):
    """CI under load printed 'WARNING:absl:Waiting for previous save to complete took 1.08 seconds. If this
    number is high, consider checkpointing less frequently.' where the run itself had asked for the wait
    (a final save after `wait_until_finished`): the one-line report of a cut-short checkpoint got two."""
    manager = checkpointing.make_manager(str(tmp_path / "checkpoints"), 1, 3, async_save=False)  # may install it
    absl_log = logging.getLogger("absl")
    monkeypatch.setattr(absl_log, "filters", [])
    state = {"w": np.ones(3, np.float32)}

    def waiting_lines(step):
        caplog.clear()
        manager._wait_for_prev_save_duration = 1.5  # orbax's count of the waits since its last save
        with caplog.at_level(logging.WARNING, logger="absl"):
            assert checkpointing.save(manager, step, state, {"step": step})
        return [r for r in caplog.records if r.getMessage().startswith("Waiting for previous save to complete")]
    assert len(waiting_lines(1)) == 1                   # orbax's line, without the filter
    checkpointing._drop_orbax_wait_warning.__wrapped__()  # the process-wide install, undone after the test
    assert waiting_lines(2) == []
    assert absl_log.filter(logging.LogRecord("absl", logging.WARNING, __file__, 1, "other", None, None))
    manager.close()
    assert manager.all_steps() == [1, 2]


def test_any_one_emptied_file_of_the_newest_checkpoint_restores_it_exactly_or_sets_it_aside(tmp_path, capsys):
    """A stranger emptied some files of the newest checkpoint (`_sharding`, data files) and the run resumed
    without a word: each file is tried here. Either the files orbax needs are intact and the step restores
    bit-exactly, or it is moved aside with one line and the one before restores; never other values."""
    state = {f"w{i}": jax.random.normal(jax.random.key(i), (64, 32 + i), jnp.float32) for i in range(6)}
    original = tmp_path / "original"
    manager = checkpointing.make_manager(str(original), 1, 3, async_save=False)
    for step in (1, 2):
        checkpointing.save(manager, step, state, {"step": step})
    manager.close()
    files = sorted(os.path.relpath(os.path.join(d, f), original) for d, _, names in os.walk(original / "2")
                   for f in names)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = checkpointing.abstract(state, jax.tree.map(lambda _: device, state))
    restored_steps = {}
    for i, name in enumerate(files):
        copy = tmp_path / f"copy{i}"
        shutil.copytree(original, copy)
        open(copy / name, "w").close()
        manager = checkpointing.make_manager(str(copy), 1, 3)
        restored, meta = checkpointing.restore_latest(manager, abstract)
        manager.close()
        assert all(bool(jnp.array_equal(restored[k], state[k])) for k in state), name
        restored_steps[name] = meta["step"]
        err = capsys.readouterr().err
        if meta["step"] == 1:
            assert err.startswith(f"warning: {copy / '2'}: cannot be restored (") and os.path.isdir(f"{copy}/2.corrupt")
        else:
            assert "cannot be restored" not in err and os.path.isdir(copy / "2")
    assert restored_steps["2/state/_METADATA"] == 1 and restored_steps["2/state/manifest.ocdbt"] == 1
