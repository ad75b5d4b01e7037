"""Tiny converted inputs for the `python -m convert` output and non-finite tests."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from tests.convert.ldm_fixtures import build, ldm_state_dict, save_single_file


def tiny_ldm(path: str, edit=None) -> str:
    """A tiny SD1.x LDM single file (.safetensors); `edit(state_dict)` may change tensors first."""
    sd = ldm_state_dict(*build("small"))
    if edit:
        edit(sd)
    return save_single_file(path, sd)


def snapshot(path: str) -> dict[str, str]:
    """{relative path: sha256} of every file under a folder (or of one file)."""
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return out


def leftovers(folder: str) -> list[str]:
    """Temporary entries (ours are dot-prefixed `.partial` / `.old`) left in a folder."""
    return sorted(n for n in os.listdir(folder) if n.endswith((".partial", ".old")))


def flax_file(path: str, scale: float, nan_at: str | None = None) -> str:
    """A small Flax-params-style safetensors file (two tensors)."""
    from animatediff_jax.checkpoint import save_params
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": (scale * rng.standard_normal((64, 64))).astype(np.float32)},
              "b": {"bias": (scale * rng.standard_normal(64)).astype(np.float32)}}
    if nan_at:
        params[nan_at][next(iter(params[nan_at]))][0] = np.nan
    save_params(path, params)
    return path
