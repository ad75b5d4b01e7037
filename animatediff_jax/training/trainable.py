"""Trainable vs frozen: one path rule over the one params tree.

`trainable_modules` are regexes, as in the original AnimateDiff configs (`["motion_modules."]`); a
parameter trains when any regex is found in its PyTorch-style name (`down_blocks.0.motion_modules.1.
...weight`) or in its `/`-joined Flax path (`down_blocks_0/motion_modules_1/.../kernel`). The tree is
split into two disjoint nested dicts; only the trainable one is differentiated and gets optimizer
state, the frozen one is passed through untouched, and `merge` puts them back together for `apply`.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from animatediff_jax.errors import UsageError
from animatediff_jax.params import flatten, flax_path_to_torch, unflatten


def is_trainable(path: tuple[str, ...], patterns: Sequence[re.Pattern]) -> bool:
    """Whether the parameter at Flax `path` matches any compiled `trainable_modules` pattern."""
    flax_name = "/".join(path)
    torch_name = flax_path_to_torch(path)
    return any(p.search(torch_name) or p.search(flax_name) for p in patterns)


def split(params: Mapping, trainable_modules: Sequence[str]) -> tuple[dict, dict]:
    """params -> (trainable, frozen), two disjoint nested dicts whose union is `params`.

    Raises UsageError when no parameter matches: training nothing is always a configuration error.
    """
    patterns = [re.compile(p) for p in trainable_modules]
    trainable, frozen = {}, {}
    for path, leaf in flatten(params).items():
        (trainable if is_trainable(path, patterns) else frozen)[path] = leaf
    if not trainable:
        raise UsageError(f"trainable_modules: {list(trainable_modules)} match no parameter "
                         f"(example path: {'/'.join(next(iter(flatten(params))))})")
    return unflatten(trainable), unflatten(frozen)


def merge(trainable: Mapping, frozen: Mapping) -> dict:
    """Inverse of `split`: the full params tree."""
    flat = flatten(frozen)
    for path, leaf in flatten(trainable).items():
        if path in flat:
            raise ValueError(f"{'/'.join(path)} is both trainable and frozen")
        flat[path] = leaf
    return unflatten(flat)


def count(tree: Mapping) -> int:
    """Number of scalars in a params tree."""
    return sum(int(getattr(leaf, "size", 1)) for leaf in flatten(tree).values())
