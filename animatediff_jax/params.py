"""Pytree helpers shared by loading, sampling, training and `convert/`: one home for each.

Parameters are plain nested dicts with diffusers-Flax names; a *path* is the tuple of names from the
root to a leaf, `("down_blocks_0", "motion_modules_1", "proj_in", "kernel")`. `flatten` / `unflatten`
are the one conversion between the nested and the {path: leaf} form (used instead of
`flax.traverse_util` everywhere). Also here: the path <-> PyTorch key rule, the motion-module path
rule, inserting motion params into a UNet tree, and the cache root (atomic writes: `outputs.py`).

    down_blocks.0.resnets.1.conv1.weight (4-D)  <->  down_blocks_0/resnets_1/conv1/kernel
    ...attn1.to_q.weight (2-D)                  <->  .../attn1/to_q/kernel
    ...norm1.weight (1-D)                       <->  .../norm1/scale
    text_model.embeddings.token_embedding.weight <-> .../token_embedding/embedding

A numeric component joins the module-list name before it (`resnets.1` -> `resnets_1`); the inverse
splits it back only for names in `MODULE_LISTS`, so `time_embedding.linear_1` stays what it is.
(The tensor layouts that go with the rename are `convert/naming.py`'s.)
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
from typing import Iterable, Mapping

import numpy as np

from animatediff_jax.errors import InputError

Path = tuple[str, ...]


class ParamsMismatchError(InputError):
    """Params whose paths or shapes do not fit the tree they are meant for (message names both sides)."""


def flatten(tree: Mapping) -> dict[Path, object]:
    """Nested dict -> {path tuple: leaf}."""
    flat: dict[Path, object] = {}

    def walk(node, prefix: Path):
        for name, child in node.items():
            if isinstance(child, Mapping):
                walk(child, prefix + (name,))
            else:
                flat[prefix + (name,)] = child

    walk(tree, ())
    return flat


def unflatten(flat: Mapping[Path, object] | Iterable[tuple[Path, object]]) -> dict:
    """{path tuple: leaf} -> nested dict."""
    items = flat.items() if isinstance(flat, Mapping) else flat
    tree: dict = {}
    for path, leaf in items:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return tree


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


def is_motion_path(path: tuple[str, ...]) -> bool:
    """Whether a Flax param path belongs to a motion module."""
    return any(p.startswith("motion_modules_") for p in path)


def _examples(keys, n: int = 5) -> str:
    """A few keys for an error message: 'a, b, c (and 7 more)' (as `convert.io.examples`)."""
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def insert_motion(unet_params: Mapping, motion_params: Mapping, *, strict: bool = True) -> dict:
    """UNet params with the motion-module leaves of `motion_params` put in place.

    strict=True (an initialised inflated UNet): the motion subtrees are replaced; refuses motion
    params the UNet lacks, UNet motion params the module lacks, and shape changes
    (`ParamsMismatchError`). strict=False (a 2D UNet gaining its motion modules): a recursive merge,
    the motion leaves added or replacing what is there, nothing checked.
    """
    if not strict:
        return _merge(unet_params, motion_params)
    flat, motion = flatten(unet_params), flatten(motion_params)
    wanted = {p for p in flat if is_motion_path(p)}
    missing, extra = wanted - set(motion), set(motion) - wanted
    if missing or extra:
        raise ParamsMismatchError(
            "motion module does not fit the UNet: "
            + (f"{len(missing)} UNet motion params absent, e.g. {_examples('/'.join(p) for p in missing)}; "
               if missing else "")
            + (f"{len(extra)} params the UNet lacks, e.g. {_examples('/'.join(p) for p in extra)}"
               if extra else ""))
    for p, v in motion.items():
        if np.shape(v) != np.shape(flat[p]):
            raise ParamsMismatchError(f"motion param {'/'.join(p)} has shape {np.shape(v)}, "
                                      f"the UNet expects {np.shape(flat[p])}")
        flat[p] = v
    return unflatten(flat)


def check_shapes(params: Mapping, want: Mapping[Path, tuple[int, ...]], what: str) -> None:
    """Every path of `want` is in `params` with its shape, nothing extra (`ParamsMismatchError`
    naming `what` and up to 4 paths of each kind otherwise): the one "params fit" check."""
    have = {p: tuple(np.shape(v)) for p, v in flatten(params).items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    bad = sorted(p for p in set(want) & set(have) if tuple(want[p]) != have[p])
    if missing or extra or bad:
        show = lambda ps: ", ".join("/".join(p) for p in ps[:4])  # noqa: E731
        raise ParamsMismatchError(f"{what}: parameters do not fit the network: "
                                  + (f"{len(missing)} missing ({show(missing)}) " if missing else "")
                                  + (f"{len(extra)} unexpected ({show(extra)}) " if extra else "")
                                  + (f"{len(bad)} mis-shaped ({show(bad)})" if bad else ""))


def _merge(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cache_root() -> str:
    """The one cache folder of animatediff_jax: $ANIMATEDIFF_JAX_CACHE, else
    $XDG_CACHE_HOME/animatediff_jax, else ~/.cache/animatediff_jax (read at each call).

    Under it: `converted/` (PyTorch checkpoints converted on first use), `param_shapes/` (the
    traced parameter-shape tables of `convert/`), `tokenizers/` (tokenizers as transformers built
    them, `tokenizer.py`), `programs/` (exported traced programs, `sampling/program_cache.py`),
    `jax_cache/` (JAX's compilation cache, unless $JAX_COMPILATION_CACHE_DIR says otherwise).
    """
    return os.environ.get("ANIMATEDIFF_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "animatediff_jax")


@functools.lru_cache(maxsize=None)
def code_fingerprint(folder: str) -> str:
    """sha256 of the jax, jaxlib and flax versions and of every .py file under `folder` (recursively):
    a cache entry derived from tracing that code (shape tables, exported programs) is valid while it
    holds."""
    digest = hashlib.sha256()
    for name in ("jax", "jaxlib", "flax"):
        digest.update(f"{name}={importlib.metadata.version(name)};".encode())
    files = sorted(os.path.relpath(os.path.join(where, name), folder)
                   for where, _, names in os.walk(folder) for name in names if name.endswith(".py"))
    for name in files:
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()
