"""Context windows over the frames: which frames each window holds and how much each counts.

A video longer than the motion module's position encoding is processed in windows of `length`
frames that start every `stride` frames, the last one aligned to the end so every frame is covered;
overlapping results are averaged with per-position weights (FreeNoise, Qiu et al. 2023). The
sampler's context windows (`sampling/context_windows.py`: the whole UNet per window) and the motion
module's window fusion (`motion_module.py`: only its attentions per window) share these.
"""
from __future__ import annotations

import numpy as np

WEIGHTINGS = ("uniform", "pyramid")


def context_windows(num_frames: int, length: int, stride: int) -> np.ndarray:
    """Frame indices of each window, (num_windows, min(length, num_frames)) int32."""
    if length >= num_frames:
        return np.arange(num_frames, dtype=np.int32)[None]
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return np.stack([np.arange(s, s + length, dtype=np.int32) for s in starts])


def window_weights(length: int, weighting: str) -> np.ndarray:
    """Per-frame weight inside a window: uniform ones, or FreeNoise's pyramid (1, 2, .., 2, 1)."""
    if weighting == "uniform":
        return np.ones(length, np.float32)
    half = np.arange(1, (length + 1) // 2 + 1, dtype=np.float32)
    return np.concatenate([half, half[: length // 2][::-1]])
