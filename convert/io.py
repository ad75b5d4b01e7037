"""Safe, lazy reading of PyTorch checkpoint files: `.safetensors`, `.ckpt`, `.bin`, `.pt`.

`open_state_dict(path)` returns a `StateDict`: a read-only mapping from key to numpy array whose
shapes and dtypes are known without reading data. Two ways to get a tensor:

- `sd[key]`: a copy, read with positional file reads (merges and LoRA files, which hold one tensor
  at a time);
- `sd.view(key)`: zero-copy, a read-only numpy view of the file's memory map (pages load on first
  touch). The map stays open as long as any view lives, even after `close()`; `sd.release(key)`
  drops the resident pages a view touched once its bytes live elsewhere (a copy, a device, a
  written file), so a streaming job's memory does not grow with every page it read.

- `.safetensors` goes through `animatediff_jax.safetensors_file` (the one validated reader); a
  `*.safetensors.index.json`
  / `*.bin.index.json` of a sharded diffusers save opens as one `ShardedStateDict` over its shards.
- Pickle-based files (`.ckpt`, `.bin`, `.pt`) go through `torch.load(weights_only=True, mmap=True)`
  only: a pickle that would build anything but tensors and plain containers is refused; plain
  `pickle` is never used. A `"state_dict"` or `"controlnet"` wrapper (possibly nested) is unwrapped.
- A truncated or corrupt file fails with an error naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from typing import Iterator, Mapping

import numpy as np

from animatediff_jax.errors import InputError
from animatediff_jax.safetensors_file import SafetensorsError, SafetensorsFile, misnamed, sniff

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".ckpt", ".bin", ".pt", ".pth")
# what training scripts wrap a state dict in: Lightning / the AnimateDiff trainer ("state_dict"), the
# original AnimateDiff SparseCtrl loader ("controlnet")
WRAPPERS = ("state_dict", "controlnet")


class CheckpointError(InputError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def examples(keys, n: int = 5) -> str:
    """A few keys for an error message: 'a, b, c (and 7 more)'."""
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


class StateDict(Mapping):
    """Lazy read-only state dict: `shape(k)`, `dtype(k)` from the header; `sd[k]` reads one tensor."""

    path: str
    metadata: dict[str, str]

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> np.dtype:
        raise NotImplementedError

    def view(self, key: str) -> np.ndarray:
        """The tensor without a copy where the format allows (read-only), else `self[key]`."""
        return self[key]

    def release(self, key: str) -> None:
        """Drop the resident pages that `view(key)` touched (its data stays valid: touching it again
        re-reads the file). For a view whose bytes now live elsewhere (a copy, a device, a written file)."""

    def nbytes(self) -> int:
        return sum(int(np.prod(self.shape(k), dtype=np.int64)) * self.dtype(k).itemsize for k in self)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafetensorsStateDict(StateDict):
    """A `.safetensors` file through the project's one validated reader (`SafetensorsFile`)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._file = SafetensorsFile(path)
        except SafetensorsError as e:
            raise CheckpointError(str(e)) from None
        self.metadata = self._file.metadata

    def shape(self, key):
        return self._file.shape(key)

    def dtype(self, key):
        return self._file.dtype(key)

    def __getitem__(self, key):
        return self._file.read(key)

    def view(self, key):
        return self._file.view(key)

    def release(self, key):
        self._file.release(key)

    def __iter__(self) -> Iterator[str]:
        return self._file.keys()

    def __len__(self):
        return len(self._file.entries)

    def close(self):
        """Closes the file; the memory map is only dropped (views keep it alive until they die)."""
        self._file.close()


def torch_to_numpy(t) -> np.ndarray:
    """A CPU torch tensor as a numpy array (bfloat16 via ml_dtypes; no float upcast)."""
    import torch
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class TorchStateDict(StateDict):
    """A pickle checkpoint loaded with `torch.load(weights_only=True, mmap=True)`; tensors stay mapped."""

    def __init__(self, path: str):
        self.path = path
        self.metadata = {}
        self._tensors = _unwrap(path, _torch_load(path))

    def shape(self, key):
        return tuple(self._tensors[key].shape)

    def dtype(self, key):
        import torch
        t = self._tensors[key]
        return torch_to_numpy(torch.empty(0, dtype=t.dtype)).dtype

    def __getitem__(self, key):
        return torch_to_numpy(self._tensors[key])  # a view that keeps its (mapped) storage alive

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def close(self):
        self._tensors = {}


class ShardedStateDict(StateDict):
    """A sharded diffusers/transformers save (`*.safetensors.index.json` or `*.bin.index.json`:
    {"weight_map": {key: shard file}}) as one lazy state dict. Keys iterate shard by shard, so a
    converter walking them streams one shard at a time."""

    def __init__(self, index_path: str):
        self.path, self.metadata = index_path, {}
        self._shards: dict[str, StateDict] = {}
        self._where: dict[str, StateDict] = {}
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index_path}: unreadable shard index ({type(e).__name__}: {e})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: not a shard index (no 'weight_map' of key -> shard file)")
        folder = os.path.dirname(os.path.abspath(index_path))
        try:
            for shard in dict.fromkeys(weight_map.values()):
                if not isinstance(shard, str) or os.path.basename(shard) != shard:
                    raise CheckpointError(f"{index_path}: bad shard file name {shard!r} in the index")
                try:
                    self._shards[shard] = open_state_dict(os.path.join(folder, shard))
                except CheckpointError as e:
                    raise CheckpointError(f"{index_path}: shard {e}") from None
            for sd in self._shards.values():
                twice = [k for k in sd if k in self._where]
                if twice:
                    raise CheckpointError(f"{index_path}: {len(twice)} keys are in two shards "
                                          f"({os.path.basename(self._where[twice[0]].path)} and "
                                          f"{os.path.basename(sd.path)}): {examples(twice)}")
                self._where.update((k, sd) for k in sd)
            missing = [k for k, shard in weight_map.items() if k not in self._shards[shard]]
            if missing:
                raise CheckpointError(f"{index_path}: {len(missing)} keys listed in the index are not in their "
                                      f"shards: {examples(missing)}")
        except BaseException:
            self.close()
            raise

    @property
    def shard_paths(self) -> list[str]:
        return [sd.path for sd in self._shards.values()]

    def shape(self, key):
        return self._where[key].shape(key)

    def dtype(self, key):
        return self._where[key].dtype(key)

    def __getitem__(self, key):
        return self._where[key][key]

    def view(self, key):
        return self._where[key].view(key)

    def release(self, key):
        self._where[key].release(key)

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)

    def close(self):
        for sd in self._shards.values():
            sd.close()


def _is_zipfile(path: str) -> bool:
    """`zipfile.is_zipfile`, which itself raises `BadZipFile` for some corrupt archives."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path}: corrupt zip archive ({e})") from None


def _pickle_container(path: str) -> bool:
    """Whether the PyTorch checkpoint `path` is a zip archive (else a legacy pickle), read from its first
    bytes and zip directory; CheckpointError for a file that is neither (what it is, with or without torch)."""
    zipped = _is_zipfile(path)
    if not zipped:
        with open(path, "rb") as f:
            head = f.read(9)
        if sniff(head) == "safetensors":
            raise CheckpointError(misnamed(path, "safetensors"))
        if head[:4] == b"PK\x03\x04":
            raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint (a zip archive without "
                                  "its central directory)")
        if head[:1] != b"\x80":  # neither a zip archive nor a legacy (protocol 2+) torch pickle
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                                  "corrupt or truncated?")
    return zipped


def _torch_load(path: str):
    zipped = _pickle_container(path)
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading pickle checkpoints needs PyTorch "
                              "(pip install -e \".[torch]\") — or convert it to .safetensors") from None
    try:
        with warnings.catch_warnings():  # a damaged protocol byte: torch warns, then loads or fails (ours)
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds objects or opcodes other than tensors and plain "
            f"containers (it could run code, or it is corrupt). Only weights_only loading is allowed. "
            f"Detail: {_refusal_detail(e)}") from None
    except Exception as e:  # noqa: BLE001 - whatever torch.load raises on a file it was given is about that file
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint "
                              f"({type(e).__name__}: {detail})") from None


def _refusal_detail(e: pickle.UnpicklingError) -> str:
    """What torch's weights_only unpickler refused (e.g. 'Unsupported global: GLOBAL os.system ...'),
    without its advice to load the file unsafely (weights_only=False, add_safe_globals) or its colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    detail = found.group(1) if found else (text.strip().splitlines() or [type(e).__name__])[0]
    advice = r"\s*(?:Please use|Re-running|This file can still be loaded|Weights only load failed)"
    return re.split(advice, detail)[0].strip() or type(e).__name__


def _unwrap(path: str, obj) -> dict:
    """The flat {key: tensor} inside a loaded pickle: unwraps (nested) `WRAPPERS`, drops non-tensors."""
    import torch
    while isinstance(obj, Mapping) and any(isinstance(obj.get(w), Mapping) for w in WRAPPERS):
        obj = next(obj[w] for w in WRAPPERS if isinstance(obj.get(w), Mapping))
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                              f"{type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {examples(map(str, obj))})")
    return tensors


def checkpoint_format(path: str) -> str:
    """"shards" (an index .json), "safetensors" or "pickle" — from the file's name and content, without
    unpickling anything: a safetensors file's header is parsed, a pickle's first bytes and zip directory
    read (a file named otherwise is tried as safetensors). CheckpointError for a missing, empty, unknown
    or corrupt file: random bytes named .safetensors are refused here, before what a caller checks next."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: {'not a regular file' if os.path.exists(path) else 'no such file'}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: empty file")
    if path.lower().endswith(".json"):
        return "shards"
    ext = os.path.splitext(path)[1].lower()
    if ext in SAFETENSORS_EXT:
        SafetensorsStateDict(path).close()
        return "safetensors"
    if ext in PICKLE_EXT or _is_zipfile(path):
        _pickle_container(path)
        return "pickle"
    try:
        SafetensorsStateDict(path).close()
    except CheckpointError:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, .ckpt, .bin, .pt)") from None
    return "safetensors"


def open_state_dict(path: str) -> StateDict:
    """Open one checkpoint file (or a shard index) lazily. The format comes from the file's content,
    not only its name (`checkpoint_format`)."""
    opener = {"shards": ShardedStateDict, "safetensors": SafetensorsStateDict, "pickle": TorchStateDict}
    return opener[checkpoint_format(path)](os.fspath(path))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint file as numpy arrays (eager; use `open_state_dict` to stream)."""
    with open_state_dict(path) as sd:
        return {k: sd[k] for k in sd}
