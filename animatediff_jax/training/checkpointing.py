"""Train-state checkpoints with orbax: async saves every N steps, keep-last-K, resume from the latest.

Saved per step: the `TrainState` (trainable params, optimizer state, step, RNG) sharded as it lives
on the devices, and a small JSON item (the input position and the run's config) — never the frozen
base, which is re-read from its source. Every process calls every method (orbax coordinates the
hosts: one writes the metadata, each its own shards). SIGTERM (how TPU VMs are told they will be
preempted) sets a flag the loop polls, so it can save the current step and exit cleanly.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


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


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict] | None:
    """(state, meta) of the latest finished checkpoint, placed like `abstract_state`
    (a pytree of `jax.ShapeDtypeStruct` with shardings); None when there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]


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
