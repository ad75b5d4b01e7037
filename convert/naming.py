"""The one mechanical rename between diffusers/transformers PyTorch state dicts and our Flax pytrees.

    down_blocks.0.resnets.1.conv1.weight  (O, I, kh, kw)  <->  down_blocks_0/resnets_1/conv1/kernel  (kh, kw, I, O)
    ...attn1.to_q.weight                  (out, in)       <->  .../attn1/to_q/kernel                 (in, out)
    ...norm1.weight                       (C,)            <->  .../norm1/scale
    text_model.embeddings.token_embedding.weight          <->  .../token_embedding/embedding

The key <-> path rule (`torch_key_to_flax`, `flax_path_to_torch`) lives in `animatediff_jax.params`
(training matches its `trainable_modules` regexes against PyTorch-style names too); here are the
tensor layouts and whole state dicts.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np

from animatediff_jax.params import Path, flatten, flax_path_to_torch, torch_key_to_flax, unflatten

# kernel rank -> axis permutation PyTorch -> Flax: Linear (out,in)->(in,out), conv OI[D]HW -> [D]HWIO
_KERNEL_PERMUTATION = {2: (1, 0), 4: (2, 3, 1, 0), 5: (2, 3, 4, 1, 0)}


def _permute_kernel(path: Path, array: np.ndarray, inverse: bool) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    perm = _KERNEL_PERMUTATION.get(array.ndim)
    if perm is None:
        raise ValueError(f"{'/'.join(path)}: kernel with unexpected shape {array.shape}")
    return array.transpose(np.argsort(perm) if inverse else perm)  # a view, never a copy


def torch_tensor_to_flax(path: Path, array: np.ndarray) -> np.ndarray:
    """Layout change for one tensor: Linear (out,in)->(in,out), conv OI[D]HW -> [D]HWIO."""
    return _permute_kernel(path, array, inverse=False)


def flax_tensor_to_torch(path: Path, array: np.ndarray) -> np.ndarray:
    """Inverse of `torch_tensor_to_flax`."""
    return _permute_kernel(path, array, inverse=True)


def state_dict_to_flax(state_dict: Mapping[str, np.ndarray], skip: Iterable[str] = ()) -> dict:
    """PyTorch state dict (numpy values) -> nested Flax params. Keys matching a `skip` regex are dropped."""
    patterns = [re.compile(s) for s in skip]
    flat = {}
    for key, value in state_dict.items():
        if any(p.search(key) for p in patterns):
            continue
        value = np.asarray(value)
        path = torch_key_to_flax(key, value.ndim)
        if path in flat:
            raise ValueError(f"two PyTorch keys map to the Flax path {'/'.join(path)} (one is {key!r})")
        flat[path] = torch_tensor_to_flax(path, value)
    return unflatten(flat)


def flax_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """Nested Flax params -> PyTorch state dict (numpy values, PyTorch layouts)."""
    return {
        flax_path_to_torch(path): np.ascontiguousarray(flax_tensor_to_torch(path, np.asarray(leaf)))
        for path, leaf in flatten(params).items()
    }
