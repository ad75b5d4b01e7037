"""The one mechanical rename between diffusers/transformers PyTorch names and our Flax pytrees.

    down_blocks.0.resnets.1.conv1.weight  (O, I, kh, kw)  <->  down_blocks_0/resnets_1/conv1/kernel  (kh, kw, I, O)
    ...attn1.to_q.weight                  (out, in)       <->  .../attn1/to_q/kernel                 (in, out)
    ...norm1.weight                       (C,)            <->  .../norm1/scale
    text_model.embeddings.token_embedding.weight          <->  .../token_embedding/embedding

A numeric component joins the module-list name before it (`resnets.1` -> `resnets_1`); the inverse
splits it back only for names in `MODULE_LISTS`, so `time_embedding.linear_1` stays what it is.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np

from animatediff_jax.params import Path, flatten, unflatten

# Names of PyTorch `nn.ModuleList`s (or Sequentials) whose integer children become `name_i` in Flax.
MODULE_LISTS = frozenset({
    "down_blocks", "up_blocks", "resnets", "attentions", "motion_modules", "transformer_blocks",
    "downsamplers", "upsamplers", "to_out", "net", "layers", "attention_blocks", "norms", "blocks",
    "temp_convs", "temp_attentions",
})
EMBEDDING_MODULES = frozenset({"token_embedding", "position_embedding"})
_INDEXED = re.compile(r"^(.*)_(\d+)$")


def torch_key_to_flax(key: str, ndim: int) -> Path:
    """Flax path of a PyTorch state-dict key whose tensor has `ndim` dimensions."""
    parts: list[str] = []
    for token in key.split("."):
        if token.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{token}"
        else:
            parts.append(token)
    leaf = parts[-1]
    if leaf == "weight":
        if len(parts) > 1 and parts[-2] in EMBEDDING_MODULES:
            parts[-1] = "embedding"
        elif ndim in (2, 4, 5):
            parts[-1] = "kernel"
        elif ndim == 1:
            parts[-1] = "scale"
    return tuple(parts)


def flax_path_to_torch(path: Path) -> str:
    """PyTorch state-dict key of a Flax parameter path (inverse of `torch_key_to_flax`)."""
    tokens: list[str] = []
    for part in path[:-1]:
        m = _INDEXED.match(part)
        if m and m.group(1) in MODULE_LISTS:
            tokens += [m.group(1), m.group(2)]
        else:
            tokens.append(part)
    leaf = path[-1]
    tokens.append("weight" if leaf in ("kernel", "scale", "embedding") else leaf)
    return ".".join(tokens)


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
