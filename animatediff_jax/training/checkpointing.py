"""Train-state checkpoints with orbax: async saves every N steps, keep-last-K, resume from the latest.

Saved per step: the `TrainState` (trainable params, optimizer state, step, RNG) sharded as it lives
on the devices, and a small JSON item (the input position and the run's config) — never the frozen
base, which is re-read from its source. Every process calls every method (orbax coordinates the
hosts: one writes the metadata, each its own shards). Resuming skips (and sets aside) a newest
checkpoint that cannot be read, so a run whose last save was cut short resumes from the one before.
SIGTERM (how TPU VMs are told they will be
preempted) sets a flag the loop polls, so it can save the current step and exit cleanly.
"""
from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import types
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from animatediff_jax.errors import InputError


def make_manager(directory: str, save_every: int, keep: int, async_save: bool = True
                 ) -> ocp.CheckpointManager:
    """CheckpointManager over `directory` (created), items 'state' and 'meta'."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=max(int(keep), 1) if keep else None,
        enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, force: bool = False) -> bool:
    """Save if `step` is on the interval (or `force`); returns whether a save started."""
    return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)), force=force)


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
        with _quiet_sibling_read_failures():
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


@contextlib.contextmanager
def _quiet_sibling_read_failures():
    """Silence orbax's per-array read coroutines that fail again while a failed restore unwinds.

    orbax's `_read_array_index_and_device_put` turns any BaseException (also the GeneratorExit that
    closes it when the restore is abandoned) into a new Exception, so each unread array of a corrupt
    checkpoint prints "Exception ignored in: <coroutine ...>" and a traceback when it is collected.
    The failure is already reported in one line; only those coroutines are silenced, and they are
    collected before the hook is put back.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.object, types.CoroutineType)
                and unraisable.object.__qualname__ == "_read_array_index_and_device_put"):
            previous(unraisable)
    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def _set_aside(manager: ocp.CheckpointManager, failed: list[tuple[int, str]], restored: int,
               main: bool) -> None:
    """Rename unreadable step folders to `<step>.corrupt[-N]` (process 0, one warning line each) and
    re-read the step list, so the resumed run can save those steps again."""
    if not failed:
        return
    if main:
        for step, error in failed:
            path = os.path.join(manager.directory, str(step))
            target, n = path + ".corrupt", 1
            while os.path.exists(target):
                target, n = f"{path}.corrupt-{n}", n + 1
            os.rename(path, target)
            print(f"warning: {path}: cannot be restored ({error}); moved to {target}, resuming "
                  f"from step {restored}", file=sys.stderr, flush=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("checkpoints set aside")
    manager.reload()


def abstract(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` carrying `shardings` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


class PreemptionFlag:
    """Set by SIGTERM; `reached()` is agreed across hosts so all of them save the same step."""

    def __init__(self):
        self._set = False
        self._previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self._set = True

    def reached(self) -> bool:
        if jax.process_count() == 1:
            return self._set
        flags = multihost_utils.process_allgather(np.asarray([self._set], np.int32))
        return bool(np.max(flags))

    def restore_handler(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
