"""Train-state checkpoints with orbax: async saves every N steps, keep-last-K, resume from the latest.

Saved per step: the `TrainState` (trainable params, optimizer state, step, RNG) sharded as it lives
on the devices, and a small JSON item (the input position and the run's config) — never the frozen
base, which is re-read from its source. Every process calls every method (orbax coordinates the
hosts: one writes the metadata, each its own shards). Resuming skips (and sets aside) a newest
checkpoint that cannot be read, so a run whose last save was cut short resumes from the one before;
the partial `<step>.orbax-checkpoint-tmp` folders of a run killed while saving are removed when the
manager opens. A save that fails (disk full, ...) stops the run with one `OutputError` line naming the
OS's reason and the last checkpoint kept, its partial folder removed, orbax's reports of it silenced.
SIGTERM (how TPU VMs are told they will be
preempted) and a first Ctrl-C set a flag the loop polls, so it can save the current step and exit cleanly.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from animatediff_jax.errors import InputError, OutputError
from animatediff_jax.outputs import is_url, write_failure

# The errno TensorStore's error text carries (`... No space left on device [os_error_code='28']`).
_OS_ERROR_CODE = re.compile(r"\[os_error_code='?(\d+)'?\]")


def make_manager(directory: str, save_every: int, keep: int, async_save: bool = True
                 ) -> ocp.CheckpointManager:
    """CheckpointManager over `directory`, items 'state' and 'meta'. The folder is made by the first
    `save`, so a run stopped before it leaves none. Partial step folders left by a run killed while
    saving are removed (process 0, in the background; the first save waits for it)."""
    _drop_orbax_wait_warning()
    _silence_failed_writes()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=max(int(keep), 1) if keep else None,
        enable_async_checkpointing=async_save, create=False, cleanup_tmp_directories=True)
    if not is_url(directory):  # orbax wants an absolute local path; a gs:// URL stays as it is
        directory = os.path.abspath(directory)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False) -> bool:
    """Save if `step` is on the interval (or `force`); returns whether a save started. Called every
    step, it first reports a background save that failed since (one process: at the step after it
    failed; several: at the next save, which all hosts reach together).

    Raises OutputError when a save failed (`_reported`)."""
    with _reported(manager):
        if jax.process_count() == 1 and not manager.is_saving_in_progress():
            manager.wait_until_finished()  # nothing to wait for: raises a finished save's error
        if not (force or manager.should_save(step)):
            return False
        manager.directory.mkdir(parents=True, exist_ok=True)  # an epath: a local folder or a gs:// prefix
        return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(meta)), force=force)


def save_now(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Save `step` unless it is saved already (or its save under way), and wait until it is written.

    Raises OutputError when a save failed (`_reported`)."""
    wait(manager)
    if step not in manager.all_steps():
        save(manager, step, state, meta, force=True)
        wait(manager)


def wait(manager: ocp.CheckpointManager) -> None:
    """Wait until the saves under way are written.

    Raises OutputError when one failed (`_reported`)."""
    with _reported(manager):
        manager.wait_until_finished()


@contextlib.contextmanager
def _reported(manager: ocp.CheckpointManager):
    """A checkpoint write failing in the block (raised there, or by a background save it waits for)
    -> OutputError `DIR: saving checkpoint N failed (<the OS's reason: write_failure>); training
    stopped, <the last checkpoint kept, or nothing saved>: ...`, its partial step folder removed
    (process 0). Errors that are no failed write pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as e:  # noqa: BLE001 -- orbax re-raises its threads' errors as they came
        cause = _write_error(e)
        if cause is None:
            raise
        atexit.register(gc.collect)  # closes the writes orbax abandoned while it can: later they print tracebacks
        failed = _remove_partial(manager.directory, jax.process_index() == 0)
        kept = latest_step(str(manager.directory))
        what = f"checkpoint {', '.join(failed)}" if failed else "a checkpoint"
        then = ("nothing saved: make room, then the same command starts again" if kept is None else
                f"the state after step {kept} is kept: make room, then the same command resumes from it")
        reason = write_failure(cause, str(manager.directory))
        raise OutputError(f"{manager.directory}: saving {what} failed ({reason}); training stopped, {then}") from None


def _write_error(e: BaseException | None) -> OSError | None:
    """The OS error under a failed checkpoint write `e`: an OSError it is or was raised from (Python's
    file writes), or the errno TensorStore's error text carries; None when it is none of these."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        code = _OS_ERROR_CODE.search(str(e))
        if code:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
        e = e.__cause__ or e.__context__
    return None


def _remove_partial(directory, main: bool) -> list[str]:
    """Names of the steps whose partial (temporary) folders are in `directory`; `main` (process 0)
    removes them (`_remove_folder`)."""
    partial = ocp.utils.tmp_checkpoints(directory)
    if main:
        for path in partial:
            _remove_folder(path.get())
    return [path.get_final().name for path in partial]


def _remove_folder(path, seconds: float = 10.0) -> None:
    """Remove the folder `path` (an epath), retried for up to `seconds` while the writes a failed save
    abandoned still land in it ("Directory not empty"); one left then goes when the next run opens
    the manager."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            path.rmtree(missing_ok=True)
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, main: bool = True
                   ) -> tuple[Any, dict] | None:
    """(state, meta) of the newest checkpoint that restores, placed like `abstract_state` (a pytree
    of `jax.ShapeDtypeStruct` with shardings); None when there is no checkpoint.

    A newer checkpoint that cannot be read (a truncated or corrupt file: orbax and TensorStore raise
    plain `Exception`s) is skipped with one warning line on stderr (`main` process) and, once an
    older one has restored, moved aside to `<step>.corrupt` so the resumed run can save that step
    again. When none restores (e.g. the config no longer matches the run that wrote them), nothing
    is moved and an InputError names the newest checkpoint and its error.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    failed: list[tuple[int, str]] = []
    for step in steps:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 -- orbax/TensorStore read errors are plain Exceptions
            failed.append((step, _one_line(e)))
            continue
        _set_aside(manager, failed, step, main)
        return restored["state"], restored["meta"]
    if failed:
        raise InputError(f"{os.path.join(manager.directory, str(steps[0]))}: no checkpoint of this run can be "
                         f"restored ({failed[0][1]}); does the config match the run that wrote them?")
    return None


def _one_line(e: BaseException, limit: int = 200) -> str:
    """The root cause of `e` (orbax wraps TensorStore's error, which names the file and byte range) as
    one line of at most `limit` characters."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _abandoned_read_noise(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it was raised from) is one of orbax's abandoned array reads: its
    wrapper ("Encountered error while reading array index"), or TensorStore's completion arriving at
    the event loop orbax has closed ("Event loop is closed")."""
    while exc is not None:
        text = str(exc)
        if text.startswith("Encountered error while reading array index") or (
                isinstance(exc, RuntimeError) and text == "Event loop is closed"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _OrbaxWaitNoise(logging.Filter):
    """Drops orbax's absl warning "Waiting for previous save to complete took N seconds": it counts
    every wait since the last save, also the ones a preempted run's final save asks for (`save_now`), so
    it fired after a wait the run itself needed. Saves that stall training show in the logged throughput."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Waiting for previous save to complete")


@functools.lru_cache(maxsize=None)
def _drop_orbax_wait_warning() -> None:
    """Install `_OrbaxWaitNoise` on absl's logger (which orbax logs through), once per process."""
    logging.getLogger("absl").addFilter(_OrbaxWaitNoise())


class _FailedWriteNoise(logging.Filter):
    """Drops the reports of a failed checkpoint write (`_write_error`) that orbax's threads log, each
    with a traceback (absl: "_SignalingThread.run() raised an exception", "Failed to run N Handler
    Commit operations", "Save Finalize thread failed"), and asyncio's "exception was never retrieved"
    of the writes orbax abandons after the first one failed: `_reported` says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _write_error(record.exc_info[1] if record.exc_info else None) is None


@functools.lru_cache(maxsize=None)
def _silence_failed_writes() -> None:
    """Install `_FailedWriteNoise` on absl's and asyncio's loggers, and `_silence_abandoned_reads`
    (a failed save abandons its writes as a failed restore its reads), once per process; ignore the
    RuntimeWarning of an abandoned write collected before it started."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_FailedWriteNoise())
    warnings.filterwarnings("ignore", r"coroutine 'async_serialize_from_host\.<locals>\.write_fragment' was never "
                            "awaited", RuntimeWarning)
    _silence_abandoned_reads()


class _AsyncioNoise(logging.Filter):
    """Drops asyncio's reports of orbax's abandoned reads ("... exception was never retrieved", "Task
    was destroyed but it is pending", "Exception in callback"), and of TensorStore opens of the same
    checkpoint failing after the first failure was reported (a never-retrieved future whose error
    carries a `tensorstore_spec`: an emptied manifest.ocdbt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        unretrieved_open = message.startswith("Future exception was never retrieved") and "tensorstore_spec" in str(exc)
        return not (_abandoned_read_noise(exc) or unretrieved_open or "_read_array_index_and_device_put" in message)


@functools.lru_cache(maxsize=None)
def _silence_abandoned_reads() -> None:
    """Silence, for the rest of the process, what orbax's abandoned reads print after a failed restore.

    orbax runs a restore's per-array reads on an event loop it closes as soon as the first read fails,
    without waiting for the others: each then reports its own failure later, from whatever thread and
    at whatever time it finishes or is collected — "Exception ignored in: <coroutine
    _read_array_index_and_device_put>" (unraisable), asyncio's "exception was never retrieved" (logged),
    and TensorStore callbacks raising "Event loop is closed" (excepthooks), each with a traceback. The
    failure is already reported in one line (`restore_latest`); only these reports are dropped, every
    other exception still reaches the previous hook. Installed once, with the first manager
    (`_silence_failed_writes`).
    """
    previous_unraisable, previous_except, previous_thread = sys.unraisablehook, sys.excepthook, threading.excepthook

    def unraisable(u):
        if not _abandoned_read_noise(u.exc_value):
            previous_unraisable(u)

    def excepthook(kind, value, tb):
        if not _abandoned_read_noise(value):
            previous_except(kind, value, tb)

    def thread_excepthook(args):
        if not _abandoned_read_noise(args.exc_value):
            previous_thread(args)
    sys.unraisablehook, sys.excepthook, threading.excepthook = unraisable, excepthook, thread_excepthook
    logging.getLogger("asyncio").addFilter(_AsyncioNoise())


def _set_aside(manager: ocp.CheckpointManager, failed: list[tuple[int, str]], restored: int,
               main: bool) -> None:
    """Rename unreadable step folders to `<step>.corrupt[-N]` (process 0, one warning line each) and
    re-read the step list, so the resumed run can save those steps again."""
    if not failed:
        return
    if main:
        for step, error in failed:
            path = manager.directory / str(step)  # an epath: a local folder or a gs:// prefix
            target, n = path.with_name(f"{step}.corrupt"), 1
            while target.exists():
                target, n = path.with_name(f"{step}.corrupt-{n}"), n + 1
            path.rename(target)
            print(f"warning: {path}: cannot be restored ({error}); moved to {target}, resuming "
                  f"from step {restored}", file=sys.stderr, flush=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("checkpoints set aside")
    manager.reload()


def abstract(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` carrying `shardings` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def latest_step(directory: str) -> int | None:
    """The newest finalized checkpoint step under `directory` (orbax's step folder names; no restore,
    no devices needed), None when there is none. It may still prove unreadable (`restore_latest`)."""
    return max(ocp.utils.checkpoint_steps(directory), default=None)


class PreemptionFlag:
    """Set by SIGTERM or a first Ctrl-C (SIGINT); `reached()` is agreed across hosts so all of them
    save the same step. A first Ctrl-C says so on stderr; a second one is passed to SIGINT's previous
    handler, which aborts the run (interrupts.py: exit 130, nothing saved since the last checkpoint).
    The handler stays installed meanwhile: interrupts.py's watchdog leaves alone a signal it does not
    own, so the save after the first Ctrl-C is not cut short.

    `saves` False (the loop before its first step: the input and the step's compilation) keeps the first
    Ctrl-C quiet: there is no step to save then, and the loop says in one line that it stopped with
    nothing saved (a 'saving the current step' line before it would contradict that)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, saves: bool = True):
        self._set, self._interrupted = False, False
        self.signum: int | None = None
        self.saves = saves
        self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

    def _handler(self, signum, frame):
        if signum == signal.SIGINT:
            if self._interrupted:
                previous = self._previous[signal.SIGINT]
                if callable(previous):
                    previous(signum, frame)
                raise KeyboardInterrupt
            self._interrupted = True
            if self.saves:
                print("interrupted: saving the current step when it ends, then exiting; Ctrl-C again to abort "
                      "without saving", file=sys.stderr, flush=True)
        self._set, self.signum = True, self.signum or signum

    def name(self) -> str:
        """How the stop is reported: 'interrupted' after Ctrl-C, else 'SIGTERM' (also on a host that
        saves because another host was signalled)."""
        return "interrupted" if self.signum == signal.SIGINT else "SIGTERM"

    def signalled(self) -> bool:
        """Whether this process was signalled (no other host asked: for a loop only this one runs)."""
        return self._set

    def reached(self) -> bool:
        if jax.process_count() == 1:
            return self._set
        flags = multihost_utils.process_allgather(np.asarray([self._set], np.int32))
        return bool(np.max(flags))

    def restore_handler(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
