"""Flax params <-> `.safetensors`, written tensor by tensor and read back memory-mapped.

A stored params file is a plain safetensors file: keys are the `/`-joined Flax paths
(`down_blocks_0/resnets_1/conv1/kernel`), the metadata holds the model config as JSON, its class,
the source format and the dtype. Any safetensors reader opens it; `load_params` maps it zero-copy and,
when asked, puts each leaf straight into its target sharding.

The safetensors layout (8-byte little-endian header length, JSON header, one flat data buffer) is
simple enough that we read and write it ourselves: that lets the converters stream (header first,
then one tensor at a time, so peak memory is one tensor) and lets loads be `np.memmap` views.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from animatediff_jax.params import atomic_path, flatten, unflatten

# safetensors dtype names <-> numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
STORE_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float16": np.dtype(np.float16)}
_MAX_HEADER = 100 * 2**20


class SafetensorsError(ValueError):
    """A file that is not a valid (complete) safetensors file."""


# ----------------------------------------------------------------------------- raw format

def read_header(path: str) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries {name: {dtype, shape, data_offsets}}, metadata, data start) of a safetensors file.

    Checks the header against the file size, so a truncated file fails here, before any tensor is read.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: corrupt or truncated safetensors header "
                                   f"(header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start, end_max = 8 + n, 0
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            begin, end = entry["data_offsets"]
            count = int(np.prod(entry["shape"], dtype=np.int64))
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: corrupt safetensors entry for {name!r}: {entry!r}") from None
        if end - begin != count * dtype.itemsize:
            raise SafetensorsError(f"{path}: corrupt safetensors entry for {name!r}: "
                                   f"{end - begin} bytes for shape {entry['shape']} {entry['dtype']}")
        end_max = max(end_max, end)
    if start + end_max > size:
        raise SafetensorsError(f"{path}: truncated safetensors file: data needs {start + end_max} bytes, "
                               f"file has {size}")
    return header, metadata, start


def tensor_info(entry: Mapping) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(entry["shape"]), DTYPES[entry["dtype"]]


def read_tensor(f, entry: Mapping, start: int) -> np.ndarray:
    """One tensor of an open safetensors file, read (not mapped) into a fresh array.

    Positional reads (`os.pread`) leave the file offset alone, so threads may share `f`.
    """
    shape, dtype = tensor_info(entry)
    begin, end = entry["data_offsets"]
    buf = np.empty(end - begin, np.uint8)
    view, done = memoryview(buf), 0
    while done < len(buf):
        n = os.preadv(f.fileno(), [view[done:]], start + begin + done)
        if n <= 0:
            raise SafetensorsError(f"{f.name}: truncated while reading a tensor")
        done += n
    return buf.view(dtype).reshape(shape)


def write_safetensors(path: str, specs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                      tensors: Iterable[tuple[str, np.ndarray]], metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file atomically, streaming.

    `specs` gives every tensor's (shape, dtype) up front (the header comes first); `tensors` then
    yields (name, array) one at a time, in any order, each exactly once. Only one tensor is held.
    """
    names = sorted(specs)
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        shape, dtype = specs[name]
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": [int(s) for s in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    start = 8 + len(blob)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(start + offset)
            written = set()
            for name, array in tensors:
                if name not in specs or name in written:
                    raise ValueError(f"{path}: tensor {name!r} {'written twice' if name in written else 'not in header'}")
                shape, dtype = specs[name]
                array = np.asarray(array)
                if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
                    raise ValueError(f"{path}: tensor {name!r} is {array.shape} {array.dtype}, "
                                     f"header says {tuple(shape)} {np.dtype(dtype)}")
                f.seek(start + header[name]["data_offsets"][0])
                f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # no copy if contiguous
                written.add(name)
            missing = set(specs) - written
            if missing:
                raise ValueError(f"{path}: {len(missing)} tensors never written, e.g. {sorted(missing)[:3]}")


# ----------------------------------------------------------------------------- Flax params

def _join(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _is_float(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == DTYPES["BF16"]


def store_dtype(dtype: str | np.dtype | None, leaf_dtype: np.dtype) -> np.dtype:
    """The dtype a leaf is stored/loaded as: `dtype` for floating leaves, else unchanged."""
    if dtype is None or not _is_float(np.dtype(leaf_dtype)):
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
                dtype: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
    """Store a params pytree (numpy or jax leaves) as `.safetensors`, atomically, one leaf at a time.

    `dtype` ("float32" / "bfloat16" / "float16") casts floating leaves; None keeps each leaf's dtype.
    """
    flat = {_join(p): leaf for p, leaf in flatten(params).items()}
    specs = {k: (tuple(np.shape(v)), store_dtype(dtype, np.dtype(v.dtype))) for k, v in flat.items()}

    def leaves():
        for k, v in flat.items():
            yield k, np.asarray(v).astype(specs[k][1], copy=False)

    write_safetensors(path, specs, leaves(), params_metadata(config, source, dtype, metadata))


def read_metadata(path: str) -> dict[str, str]:
    return read_header(path)[1]


def load_config(metadata: Mapping[str, str]):
    """The config dataclass stored in params metadata (None if there is none)."""
    if "config" not in metadata:
        return None
    from animatediff_jax.models import configs
    cls = getattr(configs, metadata.get("config_class", ""), None)
    if cls is None:
        raise ValueError(f"unknown config class {metadata.get('config_class')!r} in params metadata")
    return cls.from_dict(json.loads(metadata["config"]))


def load_params(path: str, *, dtype: str | np.dtype | None = None,
                sharding: Any = None, device: bool = False) -> tuple[dict, dict[str, str]]:
    """(params pytree, metadata) of a stored params file.

    Leaves are `np.memmap` views of the file (zero-copy; pages load on first touch) unless `dtype`
    asks for a cast. With `device=True` or a `sharding` each leaf is `jax.device_put` one by one:
    `sharding` is one `jax.sharding.Sharding` for every leaf, a pytree of them matching the params,
    or a function `(path tuple, shape) -> Sharding`.
    """
    header, metadata, start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    flat = {}
    for name, entry in header.items():
        shape, file_dtype = tensor_info(entry)
        begin, end = entry["data_offsets"]
        leaf = mm[start + begin:start + end].view(file_dtype).reshape(shape)
        target = store_dtype(dtype, file_dtype)
        if target != file_dtype:
            leaf = leaf.astype(target)
        flat[tuple(name.split("/"))] = leaf
    if sharding is not None or device:
        flat = _device_put(flat, sharding)
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
