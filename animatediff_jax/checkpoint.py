"""Flax params <-> `.safetensors`, written tensor by tensor and read back memory-mapped.

A stored params file is a plain safetensors file: keys are the `/`-joined Flax paths
(`down_blocks_0/resnets_1/conv1/kernel`), the metadata holds the model config as JSON, its class,
the source format and the dtype. Any safetensors reader opens it; `load_params` maps it zero-copy
(through the project's one validated reader, `safetensors_file.SafetensorsFile`) and, when asked,
puts each leaf straight into its target sharding. Invalid files and a broken config in the metadata
are `InputError`s naming the file; non-finite leaves are named in a warning when a load touches the
data (a cast or a device put; see `nonfinite`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import ml_dtypes
import numpy as np

from animatediff_jax.errors import InputError
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.params import flatten, unflatten
from animatediff_jax.progress import progress_bar
from animatediff_jax.safetensors_file import SafetensorsFile, is_floating, write_safetensors

# the networks of an SD1.x model, one params file each in a converted folder (`python -m convert base`)
NETWORKS = ("unet", "vae", "text_encoder")

STORE_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float16": np.dtype(np.float16)}


# ----------------------------------------------------------------------------- Flax params

def _join(path: tuple[str, ...]) -> str:
    return "/".join(path)


def store_dtype(dtype: str | np.dtype | None, leaf_dtype: np.dtype) -> np.dtype:
    """The dtype a leaf is stored/loaded as: `dtype` for floating leaves, else unchanged."""
    if dtype is None or not is_floating(leaf_dtype):
        return np.dtype(leaf_dtype)
    return STORE_DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype)


def params_metadata(config=None, source: str | None = None, dtype: str | None = None,
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The metadata stored with params: config JSON and class, source format, dtype."""
    meta = {"format": "flax"}
    if config is not None:
        from animatediff_jax.models.configs import to_dict
        meta["config"] = json.dumps(to_dict(config))
        meta["config_class"] = type(config).__name__
    if source:
        meta["source"] = source
    if dtype:
        meta["dtype"] = str(dtype)
    meta.update(extra or {})
    return meta


def save_params(path: str, params: Mapping, *, config=None, source: str | None = None,
                dtype: str | None = None, metadata: Mapping[str, str] | None = None,
                nonfinite: NonFinite | None = None, progress: str | None = None) -> None:
    """Store a params pytree (numpy or jax leaves) as `.safetensors`, atomically, one leaf at a time.

    `dtype` ("float32" / "bfloat16" / "float16") casts floating leaves; None keeps each leaf's dtype.
    `nonfinite`: each written leaf passes its check, and its `report()` runs before the file is
    committed (so a refusal leaves nothing behind). `progress`: the label of a progress bar (stderr,
    bytes written); None shows none. Raises `OutputError` if `path` cannot be written.
    """
    flat = {_join(p): leaf for p, leaf in flatten(params).items()}
    specs = {k: (tuple(np.shape(v)), store_dtype(dtype, np.dtype(v.dtype))) for k, v in flat.items()}
    total = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(d).itemsize for shape, d in specs.values())

    def leaves(bar):
        for k, v in flat.items():
            leaf = np.asarray(v).astype(specs[k][1], copy=False)
            yield k, (nonfinite.check(k, leaf) if nonfinite else leaf)
            bar.update(leaf.nbytes)
        if nonfinite:
            nonfinite.report()  # before write_safetensors renames the file into place

    with progress_bar(progress, total=total, enabled=progress is not None, unit="B", unit_scale=True) as bar:
        write_safetensors(path, specs, leaves(bar), params_metadata(config, source, dtype, metadata))


def read_metadata(path: str) -> dict[str, str]:
    """The metadata of a safetensors file (header validated; a stored config must parse)."""
    with SafetensorsFile(path) as f:
        _check_config(f.metadata, path)
        return dict(f.metadata)


def is_flax_file(path: str) -> bool:
    """A `.safetensors` written by `save_params` (metadata format=flax)."""
    if not (os.path.isfile(path) and path.endswith(".safetensors")):
        return False
    try:
        return read_metadata(path).get("format") == "flax"
    except ValueError:
        return False


def incomplete_converted_folder(folder: str) -> str | None:
    """'an incomplete converted SD1.x folder: <what is wrong with each file>' for a folder without unet/
    that holds some of the files `python -m convert base` writes (`NETWORKS`) but not all of
    them usable (missing, unreadable: truncated, corrupt, the reader's reason, or not ours); None else."""
    if os.path.isdir(os.path.join(folder, "unet")):
        return None
    problems = []
    for name in NETWORKS:
        path = os.path.join(folder, f"{name}.safetensors")
        if not os.path.exists(path):
            problems.append(f"{name}.safetensors is missing")
        elif not is_flax_file(path):
            try:
                read_metadata(path)
                problems.append(f"{name}.safetensors is not a converted network (no format=flax metadata)")
            except (OSError, ValueError) as e:  # the reader's message names the file
                problems.append(str(e) if path in str(e) else f"{name}.safetensors: {e}")
    if not problems or len(problems) == len(NETWORKS) and all(p.endswith("missing") for p in problems):
        return None
    return f"an incomplete converted SD1.x folder: {'; '.join(problems)}"


def _check_config(metadata: Mapping[str, str], path: str) -> None:
    """Our own params files (format=flax) must hold a config that parses (`InputError` naming the file)."""
    if metadata.get("format") == "flax":
        load_config(metadata, path)


def load_config(metadata: Mapping[str, str], path: str = "params metadata"):
    """The config dataclass stored in params metadata (None if there is none).

    Raises `InputError` naming `path` for an unknown class or a config that does not parse."""
    if "config" not in metadata:
        return None
    from animatediff_jax.models import configs
    cls = getattr(configs, metadata.get("config_class", ""), None)
    if cls is None:
        raise InputError(f"{path}: unknown config class {metadata.get('config_class')!r} in the metadata")
    try:
        fields = json.loads(metadata["config"])
        if not isinstance(fields, dict):
            raise ValueError(f"not a JSON object: {metadata['config'][:40]!r}")
        return cls.from_dict(fields)
    except RecursionError:
        raise InputError(f"{path}: broken {cls.__name__} in the metadata (JSON nested too deeply)") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # json errors are ValueErrors
        raise InputError(f"{path}: broken {cls.__name__} in the metadata ({type(e).__name__}: {e})") from None


# The config class each network file of a converted base folder holds.
NETWORK_CONFIGS = dict(unet="UNetConfig", vae="VAEConfig", text_encoder="CLIPTextConfig", motion="MotionConfig")


def network_config(metadata: Mapping[str, str], path: str, network: str):
    """`load_config` of the `network` file ("unet", "vae", "text_encoder" or "motion": a converted motion
    module) of a converted folder.
    Raises `InputError` naming `path` when it holds another network's params (e.g. a UNet copied over
    vae.safetensors)."""
    config = load_config(metadata, path)
    expected = NETWORK_CONFIGS[network]
    if config is not None and type(config).__name__ != expected:
        raise InputError(f"{path}: holds the params of a {type(config).__name__}, not of the {network} "
                         f"({expected}) its name says")
    return config


def load_params(path: str, *, dtype: str | np.dtype | None = None,
                sharding: Any = None, device: bool = False) -> tuple[dict, dict[str, str]]:
    """(params pytree, metadata) of a stored params file.

    Leaves are `np.memmap` views of the file (zero-copy; pages load on first touch) unless `dtype`
    asks for a cast. With `device=True` or a `sharding` each leaf is `jax.device_put` one by one:
    `sharding` is one `jax.sharding.Sharding` for every leaf, a pytree of them matching the params,
    or a function `(path tuple, shape) -> Sharding`. A cast or a device put touches every leaf, and
    then non-finite leaves are reported on stderr by name (see `nonfinite`).
    Raises `InputError` (file named) for a missing or invalid file or a broken stored config.
    """
    with SafetensorsFile(path) as f:
        _check_config(f.metadata, path)
        flat = {}
        for name, entry in f.entries.items():
            leaf = f.view(name)
            target = store_dtype(dtype, entry.dtype)
            if target != entry.dtype:
                leaf = leaf.astype(target)
            flat[tuple(name.split("/"))] = leaf
        metadata = dict(f.metadata)
    if sharding is not None or device:
        flat = _device_put(flat, sharding)
    if sharding is not None or device or dtype is not None:
        found = NonFinite(path, allow=True)
        for p, leaf in flat.items():
            found.check(_join(p), leaf)
        found.report()
    return unflatten(flat), dict(metadata)


def _device_put(flat: dict, sharding: Any) -> dict:
    import jax
    if sharding is None or isinstance(sharding, jax.sharding.Sharding):
        get: Callable = lambda path, shape: sharding  # noqa: E731
    elif callable(sharding):
        get = sharding
    else:
        by_path = flatten(sharding)
        get = lambda path, shape: by_path[path]  # noqa: E731
    return {p: jax.device_put(v, get(p, v.shape)) for p, v in flat.items()}
