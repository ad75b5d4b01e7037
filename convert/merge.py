"""Checkpoint merging as the community does it: weighted sum of N models, add-difference A + s·(B − C).

Works on any checkpoints with identical keys and shapes — our Flax params files, or SD single files
of one layout — and streams: each output tensor is computed from one tensor per input (in float32)
and written at once, so peak memory is one tensor per input, never a whole model. The same
arithmetic is available on in-memory pytrees (`weighted_sum_trees`, `add_difference_trees`).

Tensors that are not learned weights are never combined: integer tensors come from the first input,
and an SD single file's non-network buffers (`ldm.IGNORED`: CLIP's `position_ids`, the `model_ema`
bookkeeping, the noise schedule) from the first input that holds each — community files differ in
which of them they carry (pruned files lack `model_ema.*`, some lack `position_ids`), so those keys
are not required in every input. They are carried, not dropped as `convert base` drops them: the
output keeps the inputs' layout, whose loaders may read them.
"""
from __future__ import annotations

import math
import sys
from collections import defaultdict
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
from animatediff_jax.params import flatten, unflatten

from animatediff_jax.checkpoint import store_dtype
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.nonfinite import kind as nonfinite_kind
from animatediff_jax.progress import progress_bar
from animatediff_jax.safetensors_file import write_safetensors
from convert import ldm
from convert.io import CheckpointError, StateDict, examples, open_state_dict


def weighted_sum(tensors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ w_i · t_i in float32."""
    out = np.zeros(np.shape(tensors[0]), np.float32)
    for t, w in zip(tensors, weights):
        out += np.float32(w) * np.asarray(t, np.float32)
    return out


def add_difference(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale: float) -> np.ndarray:
    """A + s·(B − C) in float32."""
    a, b, c = (np.asarray(x, np.float32) for x in (a, b, c))
    return a + np.float32(scale) * (b - c)


def _tree_map(fn: Callable, trees: Sequence[Mapping]) -> dict:
    flats = [flatten(t) for t in trees]
    _check_same({f"tree {i}": {"/".join(p): np.shape(v) for p, v in f.items()} for i, f in enumerate(flats)})
    return unflatten({p: fn(*(f[p] for f in flats)) for p in flats[0]})


def normalized_weights(weights: Sequence[float]) -> list[float]:
    """`weights` scaled to sum to 1: a weighted merge of checkpoints is a convex combination (as in
    A1111's merger), so `0.5 0.3` merges as 0.625 · A + 0.375 · B rather than shrinking every tensor
    by 0.8. ValueError unless the weights are finite, ≥ 0 and not all 0."""
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
    scaled = [w / max(weights) for w in weights]  # in [0, 1]: the sum cannot overflow (1e308 1e308: 0.5 0.5)
    return [w / math.fsum(scaled) for w in scaled]


def weighted_sum_trees(trees: Sequence[Mapping], weights: Sequence[float]) -> dict:
    """Σ w_i · tree_i with the weights normalised to sum to 1 (`normalized_weights`)."""
    if len(trees) != len(weights):
        raise ValueError(f"{len(trees)} models but {len(weights)} weights")
    weights = normalized_weights(weights)
    return _tree_map(lambda *ts: weighted_sum(ts, weights), trees)


def add_difference_trees(a: Mapping, b: Mapping, c: Mapping, scale: float) -> dict:
    return _tree_map(lambda x, y, z: add_difference(x, y, z, scale), [a, b, c])


def _check_same(shapes_by_name: Mapping[str, Mapping[str, tuple]]) -> None:
    """Raise unless every input has the same keys with the same shapes (names the offending input)."""
    (first_name, first), *rest = shapes_by_name.items()
    for name, shapes in rest:
        missing, extra = set(first) - set(shapes), set(shapes) - set(first)
        if missing or extra:
            raise CheckpointError(f"{name}: keys differ from {first_name}: {len(missing)} missing "
                                  f"({examples(missing, 3)}), {len(extra)} unexpected ({examples(extra, 3)})")
        wrong = [f"{k} {shapes[k]} vs {first[k]}" for k in first if tuple(shapes[k]) != tuple(first[k])]
        if wrong:
            raise CheckpointError(f"{name}: {len(wrong)} shapes differ from {first_name}: {examples(wrong, 3)}")


def buffer_sources(keys_by_input: Sequence[Collection[str]]) -> dict[str, int]:
    """{non-network buffer key (`ldm.IGNORED`): index of the first input holding it} over all inputs."""
    found: dict[str, int] = {}
    for i, keys in enumerate(keys_by_input):
        for k in keys:
            if ldm.IGNORED.match(k):
                found.setdefault(k, i)
    return found


def buffer_note(buffers: Mapping[str, int], keys_by_input: Sequence[Collection[str]], paths: Sequence[str]
                ) -> str | None:
    """The one stderr line naming the buffers (`buffer_sources`) that some input lacks, each carried from
    the first input that has it; None when every input holds every buffer."""
    by_source = defaultdict(list)
    for k, i in buffers.items():
        if not all(k in keys for keys in keys_by_input):
            by_source[paths[i]].append(k)
    if not by_source:
        return None
    listed = "; ".join(f"from {p}: {examples(ks, 3)}" for p, ks in by_source.items())
    return ("note: non-weight buffers not in every input are carried unmerged from the first input that has "
            f"each ({listed})")


def _merge_files(paths: Sequence[str], out: str, combine: Callable[[list[np.ndarray]], np.ndarray],
                 dtype: str | None, progress: bool, note: str, allow_nonfinite: bool) -> str:
    sds: list[StateDict] = []
    try:
        for p in paths:
            sds.append(open_state_dict(p))
        keys = [set(sd) for sd in sds]
        buffers = buffer_sources(keys)
        _check_same({sd.path: {k: sd.shape(k) for k in sd if k not in buffers} for sd in sds})
        holder = {k: sds[buffers.get(k, 0)] for k in set(sds[0]) | set(buffers)}
        specs = {k: (sd.shape(k), store_dtype(dtype, sd.dtype(k))) for k, sd in holder.items()}
        carried_note = buffer_note(buffers, keys, paths)
        if carried_note:
            print(carried_note, file=sys.stderr, flush=True)
        # A non-finite result is blamed on the inputs holding NaN/Inf there, else on the merge itself
        # (e.g. an overflow when casting to --dtype); inputs are only scanned where the result is bad.
        found = {p: NonFinite(p, allow=allow_nonfinite) for p in [*paths, out]}

        def tensors(bar):
            for k in sorted(specs):
                bar.update()
                # buffers and integer tensors (e.g. position ids) are carried from one input, never combined
                carried = k in buffers or np.issubdtype(specs[k][1], np.integer) or specs[k][1] == np.bool_
                sources = [buffers.get(k, 0)] if carried else range(len(sds))
                parts = [sds[i][k] for i in sources]
                with np.errstate(over="ignore", invalid="ignore"):  # Inf (and Inf - Inf) is reported by name below
                    merged = (parts[0] if carried else combine(parts)).astype(specs[k][1], copy=False)
                if nonfinite_kind(merged):
                    bad = [found[paths[i]].check(k, part) for i, part in zip(sources, parts) if nonfinite_kind(part)]
                    if not bad:
                        found[out].check(k, merged)
                yield k, merged
            for check in found.values():
                check.report()  # before write_safetensors renames the output into place

        meta = dict(sds[0].metadata)
        meta["merge"] = note
        with progress_bar("merging", total=len(specs), enabled=progress, unit="tensor") as bar:
            write_safetensors(out, specs, tensors(bar), meta)
        return out
    finally:
        for sd in sds:
            sd.close()


def merge_weighted(paths: Sequence[str], weights: Sequence[float], out: str, *, dtype: str | None = None,
                   progress: bool = True, allow_nonfinite: bool = False) -> str:
    """Stream Σ w_i · model_i into `out` (.safetensors, keys and metadata of the first input), the
    weights normalised to sum to 1 (`normalized_weights`; the metadata's `merge` note records them).
    NaN/Inf in the result is refused by tensor name (`InputError`) unless `allow_nonfinite`."""
    if len(paths) < 2 or len(paths) != len(weights):
        raise ValueError(f"weighted sum needs >= 2 models and one weight each; got {len(paths)} and {len(weights)}")
    weights = normalized_weights(weights)
    # 9 significant digits: every float32 weight exactly (the arithmetic is in float32)
    note = "weighted_sum: " + ", ".join(f"{w:.9g}*{p}" for p, w in zip(paths, weights))
    return _merge_files(paths, out, lambda ts: weighted_sum(ts, weights), dtype, progress, note, allow_nonfinite)


def merge_add_difference(a: str, b: str, c: str, scale: float, out: str, *, dtype: str | None = None,
                         progress: bool = True, allow_nonfinite: bool = False) -> str:
    """Stream A + scale·(B − C) into `out` (NaN/Inf: as `merge_weighted`)."""
    note = f"add_difference: {a} + {scale}*({b} - {c})"
    return _merge_files([a, b, c], out, lambda ts: add_difference(*ts, scale), dtype, progress, note,
                        allow_nonfinite)
