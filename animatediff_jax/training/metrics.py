"""Training progress: console lines and TensorBoard scalars (process 0 only), throughput and MFU.

    log = MetricsLogger(workdir, global_batch, flops_per_step)
    log.step(step, {"loss": 0.1, ...})      # prints every `every` steps, writes TensorBoard scalars

FLOPs per step come from XLA's cost analysis of the compiled step (`compiled_flops`), which counts
the whole SPMD program per device; MFU = achieved FLOP/s per device / the device's peak, printed only
for devices whose bfloat16 dense peak is known (`PEAK_TFLOPS`).
"""
from __future__ import annotations

import os
import time

import jax
from tensorboardX import SummaryWriter

# Dense bfloat16 peak TFLOP/s per device (chip for TPU), by `device_kind` prefix.
PEAK_TFLOPS = {
    "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v6 lite": 918.0, "TPU v6e": 918.0,
    "TPU v4": 275.0, "TPU v3": 123.0,
    "NVIDIA H200": 989.0, "NVIDIA H100": 989.0, "NVIDIA A100": 312.0, "NVIDIA L4": 121.0,
}


def device_peak_tflops(device: jax.Device | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for prefix, peak in PEAK_TFLOPS.items():
        if kind.startswith(prefix):
            return peak
    return None


def compiled_flops(compiled) -> float | None:
    """FLOPs per device of one call of a compiled function (XLA cost analysis), if reported."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class MetricsLogger:
    """Console + TensorBoard (`<workdir>/tensorboard`) on process 0; throughput over the window since
    the last print."""

    def __init__(self, workdir: str, global_batch: int, flops_per_step_per_device: float | None = None,
                 every: int = 10, total_steps: int | None = None):
        self.every = max(int(every), 1)
        self.global_batch = global_batch
        self.flops = flops_per_step_per_device
        self.total = total_steps
        self.peak = device_peak_tflops()
        self.main = jax.process_index() == 0
        self.folder = os.path.join(workdir, "tensorboard")
        self.writer = None  # made by the first write, so a run stopped before its first step leaves no folder
        self._t = time.perf_counter()
        self._n = 0

    def step(self, step: int, scalars: dict[str, float]) -> dict[str, float] | None:
        """Record one finished step; every `every` steps print and return the throughput figures."""
        self._n += 1
        if step % self.every and step != self.total:
            return None
        now = time.perf_counter()
        rate = self._n / max(now - self._t, 1e-9)
        self._t, self._n = now, 0
        out = dict(scalars, steps_per_s=rate, clips_per_s=rate * self.global_batch)
        if self.flops:
            out["tflops_per_device"] = rate * self.flops / 1e12
            if self.peak:
                out["mfu"] = out["tflops_per_device"] / self.peak
        if self.main:
            total = f"/{self.total}" if self.total else ""
            parts = [f"step {step}{total}"] + [f"{k} {v:.4g}" for k, v in out.items()]
            print(" | ".join(parts), flush=True)
            if self.writer is None:
                self.writer = SummaryWriter(self.folder)
            for k, v in out.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.flush()
        return out

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` of other work (validation sampling) out of the throughput window."""
        self._t += seconds

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
