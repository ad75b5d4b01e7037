"""Traced programs kept on disk, so a later run neither traces nor lowers the networks again.

JAX's persistent compilation cache skips XLA's compilation, but every run still traces the Python
code to find the cache key: for the default sample that is ~1.9 s of Flax tracing plus ~0.4 s of
lowering for the denoising step alone (issue 17). `DiskCachedProgram` wraps a jitted function: on
the first call with a given signature it exports the traced program (`jax.export`, StableHLO) to
`params.cache_root()/programs/`, and it calls that exported program from then on — in this run and
in every later one, whose call only deserialises it (milliseconds) and takes its executable from
the compilation cache. Both runs execute the same exported program, so they compute the same result.

The file's key covers everything the trace depends on: the caller's description of the static
inputs (network modules with their configs, sampler constants, options: a `repr` without object
addresses), the argument tree with its shapes and dtypes, the package's source code, the versions of
jax, jaxlib and flax, the backend and the jax settings that change tracing. Calls the cache cannot
serve — arguments spread over several devices (sharded), Python scalars or typed PRNG keys, a pytree
node jax.export cannot serialise (one not registered for it, as `control.ControlArgs` is), a static
description holding an object address — run the plain
jitted function; an unreadable, damaged or unwritable cache costs only the trace.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import cache_root, code_fingerprint
from animatediff_jax.xla_options import jit

_PACKAGE = str(Path(__file__).resolve().parents[1])  # its whole source keys a program


def program_dir() -> str:
    """Where exported programs are kept: `programs/` under `params.cache_root()`."""
    return os.path.join(cache_root(), "programs")


class DiskCachedProgram:
    """Callable like `jitted` (a `jax.jit` function); see the module docstring.

    name: the program's name (file names, JAX's logs); static_key: text describing every static
    input the trace closes over — it must change whenever the traced program would.
    """

    def __init__(self, name: str, static_key: str, jitted: Callable):
        self.name, self.static_key, self.jitted = name, static_key, jitted
        self._programs: dict[tuple, Callable] = {}  # (tree, shapes and dtypes) -> program

    def __call__(self, *args):
        leaves, tree = jax.tree.flatten(args)
        if not all(isinstance(x, (np.ndarray, np.generic, jax.Array)) for x in leaves):
            return self.jitted(*args)  # Python scalars are weakly typed: their programs differ
        try:
            avals = tuple((np.shape(x), jax.dtypes.canonicalize_dtype(x.dtype)) for x in leaves)
        except TypeError:  # e.g. typed PRNG keys: no numpy dtype
            return self.jitted(*args)
        program = self._programs.get((tree, avals))
        if program is None:
            if " at 0x" in self.static_key or any(len(getattr(x, "devices", lambda: ())()) > 1 for x in leaves):
                program = self.jitted
            else:
                specs = jax.tree.unflatten(tree, [jax.ShapeDtypeStruct(*a) for a in avals])
                program = self._program(specs, f"{tree}|{[(a[0], str(a[1])) for a in avals]}")
            self._programs[(tree, avals)] = program
        return program(*args)

    def compiled_count(self) -> int:
        """Executables made so far: one per argument signature (shapes, dtypes, tree), plus those of
        the plain jitted function for calls the cache does not serve."""
        programs = list(self._programs.values())
        fallback = self.jitted._cache_size() if any(p is self.jitted for p in programs) else 0
        return sum(p is not self.jitted for p in programs) + fallback

    def _program(self, specs: tuple, signature: str) -> Callable:
        """The exported program for these argument specs, from disk or exported now (and written)."""
        settings = (jax.default_backend(), jax.config.jax_default_matmul_precision, jax.config.jax_enable_x64)
        key = hashlib.sha256(f"{code_fingerprint(_PACKAGE)}|{settings}|{self.name}|{self.static_key}|{signature}"
                             .encode()).hexdigest()[:40]
        path = os.path.join(program_dir(), f"{self.name}-{key}.jaxexport")
        try:
            with open(path, "rb") as f:
                return self._callable(jax.export.deserialize(bytearray(f.read())), specs)
        except Exception:  # missing, damaged, or written by another jax: export anew
            pass
        try:
            exported = jax.export.export(self.jitted)(*specs)
            blob = exported.serialize()
        except Exception:  # a pytree or effect jax.export cannot serialise: trace as usual
            return self.jitted
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(blob)
        except OSError as e:
            _warn_unwritable(program_dir(), e)
        return self._callable(exported, specs)

    def _callable(self, exported: jax.export.Exported, specs: tuple) -> Callable:
        """The exported program compiled for `specs` (XLA's executable from the persistent cache when
        there), with the package's compiler options (`xla_options`). A compiled program, unlike a jitted function, takes committed and uncommitted arrays
        alike: the first step's latents are uncommitted, the next ones (its outputs) committed."""
        def call(*args):
            return exported.call(*args)
        call.__name__ = call.__qualname__ = self.name  # JAX's logs and cache entries: jit_<name>
        return jit(call).lower(*specs).compile()


def _warn_unwritable(folder: str, error: OSError) -> None:
    """One warning per folder and reason, not one per program."""
    reason = getattr(error.__cause__, "strerror", None) or error.strerror or str(error)
    _warn_once(folder, reason)


@functools.lru_cache(maxsize=None)
def _warn_once(folder: str, reason: str) -> None:
    warnings.warn(f"program cache {folder}: cannot write ({reason}); later runs will trace the networks again",
                  stacklevel=5)
