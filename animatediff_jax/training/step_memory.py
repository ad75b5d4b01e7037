"""Whether the train step fits the memory it will run in, and one line naming the config keys that
shrink it when it does not (checked on the compiled step before the first step runs; a step or
validation sampling that still runs out of memory is turned into the same kind of line)."""
from __future__ import annotations

import contextlib
from typing import Callable

import jax

from animatediff_jax import memory_estimate as mem
from animatediff_jax.errors import UsageError
from animatediff_jax.training.config import TrainingConfig
from animatediff_jax.training.validation import Validator


def check_step_memory(compiled, advice: str) -> None:
    """UsageError `the train step needs ~X GiB per device, this host has Y GiB available: <advice>`
    when the compiled step's bytes per device (`memory_estimate.program_bytes`; its inputs are placed
    already) exceed what is free: the host's available memory on CPU (for all its devices), the first
    accelerator's free memory elsewhere (`memory_estimate.host_available` / `device_available`).
    Nothing where either is unknown."""
    need = mem.program_bytes(compiled)
    cpu = jax.default_backend() == "cpu"
    have = mem.host_available() if cpu else mem.device_available()
    devices = jax.local_device_count() if cpu else 1
    if need is None or have is None or need * devices <= have:
        return
    per = "per device" + (f" x {devices} devices" if devices > 1 else "")
    where = "this host has" if cpu else f"this {jax.default_backend().upper()} has"
    raise UsageError(f"the train step needs ~{need / mem.GIB:.1f} GiB {per}, {where} {have / mem.GIB:.1f} GiB "
                     f"available: {advice}")


def step_memory_advice(cfg: TrainingConfig) -> str:
    """The config keys (with their values) that shrink the train step's memory: `lower
    train_data.sample_size (256), train_batch_size (4) or train_data.sample_n_frames (16), raise
    gradient_accumulation_steps (1), or set gradient_checkpointing=true` (each only where it can help)."""
    d = cfg.train_data
    sizes = [f"train_data.sample_size ({d.sample_size})", f"train_batch_size ({cfg.train_batch_size})"]
    if not cfg.image_finetune:
        sizes.append(f"train_data.sample_n_frames ({d.sample_n_frames})")
    levers = [f"lower {', '.join(sizes[:-1])} or {sizes[-1]}"]
    if cfg.gradient_accumulation_steps < cfg.train_batch_size:
        levers.append(f"raise gradient_accumulation_steps ({cfg.gradient_accumulation_steps})")
    if not cfg.gradient_checkpointing:
        levers.append("set gradient_checkpointing=true")
    return ", ".join(levers[:-1]) + f", or {levers[-1]}" if len(levers) > 1 else levers[0]


def validation_memory_advice(validator: Validator) -> str:
    """The validation_data keys (with the values sampled) that shrink validation sampling's memory (its
    prompts are sampled as one batch)."""
    return (f"lower validation_data.width ({validator.width}), validation_data.height ({validator.height}) "
            f"or validation_data.video_length ({validator.frames}), or give fewer validation_data.prompts "
            f"({len(validator.prompts)})")


@contextlib.contextmanager
def out_of_memory(what: str, advice: str, saved: Callable[[], str]):
    """XLA running out of memory in the block (a JaxRuntimeError saying RESOURCE_EXHAUSTED or Out of
    memory) -> UsageError `<what> ran out of memory: <advice>; <saved()>`, saved() saying what state
    is kept; other errors pass unchanged."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
            raise
        raise UsageError(f"{what} ran out of memory: {advice}; {saved()}") from None
