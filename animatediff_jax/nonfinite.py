"""NaN / ±Inf weights, found by name during a pass that already touches each tensor.

Policy (issue 13, kind 6):
- Converters (`python -m convert base | motion | lora | motion-lora | merge`) *refuse*: a model
  whose written tensors hold NaN or Inf is not written (nothing is left behind) and the error names
  the input and the tensors. `--allow-nonfinite` writes it anyway, with a warning naming them.
  Converting is the moment a broken download or a diverged training run is cheapest to catch.
- The sampler *refuses* (`loading.refuse_nonfinite`): every file's weights, and each LoRA's fused
  result, are checked before sampling, since one NaN weight makes every video NaN; the error names
  the flag, the file (and LoRA scale) and the tensors.
- Other loaders *warn* (naming the file and the tensors) where the load touches the data anyway: a cast
  (`load_params(dtype=...)`) or a device put (`device=` / `sharding=`). Zero-copy loads that touch
  nothing stay free; `find_nonfinite(tree)` names the culprits when a caller needs them (e.g. after
  non-finite frames).
The check is one `isfinite` pass per floating tensor (integer and bool tensors are skipped).
"""
from __future__ import annotations

import sys
from typing import Any, Collection, Mapping

import numpy as np
from animatediff_jax.params import flatten

from animatediff_jax.errors import InputError

MAX_LISTED = 5


def kind(array: Any) -> str | None:
    """'NaN', 'Inf', 'NaN and Inf' for a floating array holding them, else None (numpy or jax)."""
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.floating) or dtype.name.startswith(("bfloat16", "float8"))):
        return None
    xp = np if isinstance(array, np.ndarray) else _jnp()
    if bool(xp.isfinite(array).all()):
        return None
    has_nan, has_inf = bool(xp.isnan(array).any()), bool(xp.isinf(array).any())
    return "NaN and Inf" if has_nan and has_inf else ("NaN" if has_nan else "Inf")


def _jnp():
    import jax.numpy as jnp  # lazy: only device arrays need it, and numpy-only callers stay light
    return jnp


def describe(found: Mapping[str, str]) -> str:
    """"3 tensors hold NaN/Inf: 'a' (NaN), 'b' (Inf), ... (and k more)"."""
    names = sorted(found)
    listed = ", ".join(f"{n!r} ({found[n]})" for n in names[:MAX_LISTED])
    more = f" (and {len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return f"{len(names)} {'tensor holds' if len(names) == 1 else 'tensors hold'} NaN/Inf: {listed}{more}"


class NonFinite:
    """Collects the names of non-finite tensors as a stream passes (`check(name, array)` returns
    the array unchanged); `report()` then refuses (`InputError`) or, with `allow`, warns on stderr.

    `source`: the input the tensors come from (named first in the message); `hint`: how to allow.
    """

    def __init__(self, source: str, *, allow: bool = False, hint: str = "pass --allow-nonfinite to write it anyway"):
        self.source, self.allow, self.hint = source, allow, hint
        self.found: dict[str, str] = {}

    def check(self, name: str, array):
        problem = kind(array)
        if problem:
            self.found[name] = problem
        return array

    def report(self) -> None:
        if not self.found:
            return
        message = f"{self.source}: {describe(self.found)}"
        if not self.allow:
            raise InputError(f"{message}; refusing to write it ({self.hint})")
        warn(message)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_nonfinite(tree: Mapping, only: Collection[tuple] | None = None) -> dict[str, str]:
    """{'/'-joined path: kind} of the non-finite leaves of a params pytree (reads every leaf, or only
    those at the flattened paths `only`)."""
    found = {}
    for path, leaf in flatten(tree).items():
        if only is not None and path not in only:
            continue
        problem = kind(leaf)
        if problem:
            found["/".join(map(str, path))] = problem
    return found


def why_nonfinite(pipe, controls=()) -> str:
    """Why a video a pipeline sampled came out NaN/inf, as the end of an error line: the weights it was
    sampled with (as cast to the pipeline's dtype; `controls` its ControlNets) that hold NaN/Inf, looked
    at now, or else (every one finite) an overflow of the computation."""
    dtype = pipe.description["dtype"]
    found = find_nonfinite({"unet": pipe.unet_params, "vae": pipe.vae_params, "text_encoder": pipe.text_params,
                            **{f"{c.controlnet.source}": c.controlnet.params for c in controls}})
    try_float32 = f"; or --dtype {dtype}: try --dtype float32" if dtype != "float32" else ""
    if found:
        return f": the weights sampled with ({dtype}) are not finite: {describe(found)}{try_float32}"
    return (" although every weight is finite: the computation overflows (a huge guidance scale, LoRA or motion "
            f"scale, or weights too large for these settings{try_float32})")
