"""Prompt travel: a prompt per key frame, embeddings interpolated linearly in between.

`{0: "a cat", 12: "a dog"}` over 16 frames: frames 0..12 move from the cat's text embedding to
the dog's; frames after the last key frame hold its embedding (as before the first key frame).
The result is one (tokens, dim) embedding per frame, which the UNet's cross-attention reads per
frame (spatial attention runs frame by frame).
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np


def parse_prompt_map(prompt_map: Mapping, num_frames: int) -> tuple[list[int], list[str]]:
    """Sorted key frames and their prompts; frames as ints in [0, num_frames)."""
    if not prompt_map:
        raise ValueError("prompt travel needs at least one {frame: prompt} entry")
    keys = []
    for k, v in prompt_map.items():
        try:
            frame = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"prompt travel key {k!r} is not a frame number") from None
        if not 0 <= frame < num_frames:
            raise ValueError(f"prompt travel frame {frame} outside [0, {num_frames})")
        if not isinstance(v, str):
            raise ValueError(f"prompt travel prompt for frame {frame} must be a string, got {v!r}")
        keys.append((frame, v))
    keys.sort()
    if len({f for f, _ in keys}) != len(keys):
        raise ValueError("prompt travel: a frame is given twice")
    return [f for f, _ in keys], [p for _, p in keys]


def interpolation_weights(key_frames: list[int], num_frames: int) -> np.ndarray:
    """(num_frames, num_keys) weights: each row mixes at most two neighbouring key frames."""
    w = np.zeros((num_frames, len(key_frames)), np.float32)
    for f in range(num_frames):
        if f <= key_frames[0]:
            w[f, 0] = 1
        elif f >= key_frames[-1]:
            w[f, -1] = 1
        else:
            j = int(np.searchsorted(key_frames, f, side="right")) - 1
            a, b = key_frames[j], key_frames[j + 1]
            t = (f - a) / (b - a)
            w[f, j], w[f, j + 1] = 1 - t, t
    return w


def interpolate_embeddings(key_embeddings, key_frames: list[int], num_frames: int):
    """Per-frame embeddings (num_frames, T, D) from key-frame embeddings (K, T, D)."""
    w = jnp.asarray(interpolation_weights(key_frames, num_frames))
    return jnp.einsum("fk,ktd->ftd", w, key_embeddings.astype(jnp.float32)).astype(key_embeddings.dtype)
