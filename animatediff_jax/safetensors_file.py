"""The one `.safetensors` reader and writer of the project: validated header, zero-copy tensor views.

Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes
of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
then one flat data buffer; offsets are relative to the buffer's start.

`SafetensorsFile(path)` checks the whole header before any tensor is touched, at least as strictly
as the `safetensors` library (which it also runs, through `safe_open`, as a second check):
the length is sane (<= 100 MiB) and inside the file; the header is a UTF-8 JSON object with no
duplicate names and no deep nesting; every entry has a known dtype, a shape of non-negative ints,
and two int offsets 0 <= begin <= end; the entries are contiguous, do not overlap and cover the
data buffer exactly; each byte length is the shape's element count times the dtype size; the
metadata is a str -> str map. Any violation is a `SafetensorsError` (an `InputError`) whose message
names the file and the problem. Tensors are then read (`read`: positional reads into a fresh
array) or mapped (`view`: read-only `np.memmap` views, zero-copy; pages load on first touch).

`write_safetensors` streams a file (header first, then one tensor at a time, so peak memory is one
tensor) through `outputs.atomic_path`.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import ml_dtypes
import numpy as np
import safetensors

from animatediff_jax.errors import InputError
from animatediff_jax.outputs import atomic_path

# safetensors dtype names <-> numpy dtypes.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32), "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_ML_FLOATS = (DTYPES["BF16"], DTYPES["F8_E4M3"], DTYPES["F8_E5M2"])  # ml_dtypes' floats: numpy kind 'V'


def is_floating(dtype) -> bool:
    """Whether `dtype` is a floating-point type: numpy's, bfloat16 or float8 (what a weight may be)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype in _ML_FLOATS
MAX_HEADER = 100 * 2**20  # the safetensors library's limit
METADATA_KEY = "__metadata__"


class SafetensorsError(InputError):
    """A file that is not a valid, complete safetensors file; the message names the file."""


@dataclass(frozen=True)
class TensorEntry:
    """One header entry: numpy dtype, shape, and byte range [begin, end) within the data buffer."""
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int  # file offset of the data buffer (8 + header length)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"name {key!r} appears twice")
        out[key] = value
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _entry(name: str, raw: Any) -> TensorEntry:
    """A validated entry; raises ValueError with the problem (the caller adds the file name)."""
    if not isinstance(raw, dict):
        raise ValueError(f"entry {name!r} is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in raw:
            raise ValueError(f"entry {name!r} has no {key!r}")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"entry {name!r} has an unknown or unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise ValueError(f"entry {name!r} has a bad shape {shape!r} (expected a list of non-negative ints)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"entry {name!r} has bad data_offsets {offsets!r} (expected [begin, end] ints, "
                         "0 <= begin <= end)")
    size = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize  # Python ints: no overflow
    if offsets[1] - offsets[0] != size:
        raise ValueError(f"entry {name!r} holds {offsets[1] - offsets[0]} bytes but shape {shape} {dtype} "
                         f"needs {size}")
    return TensorEntry(DTYPES[dtype], tuple(shape), offsets[0], offsets[1])


# what a file's first bytes show it to be (`sniff`): its name, and the suffix it should have
FORMATS = {"safetensors": ("a safetensors", ".safetensors"), "pickle": ("a PyTorch checkpoint (zip/pickle)", ".ckpt")}


def sniff(head: bytes) -> str | None:
    """"safetensors" (an 8-byte header length, then the header's '{'), "pickle" (a zip archive's
    PK\\x03\\x04 or a pickle's protocol byte \\x80) or None, from a file's first 9 bytes."""
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    return None


def misnamed(path: str, kind: str) -> str:
    """The error message for a `kind` (`FORMATS`) file whose name says otherwise."""
    name, suffix = FORMATS[kind]
    ext = os.path.splitext(path)[1]
    return f"{path}: this is {name} file named {ext or 'without a suffix'}; rename it to {suffix}"


def parse_header(path: str, head: bytes, file_size: int) -> Header:
    """Validate a header: `head` is the file's first bytes (at least 8 + header length, if the file
    has them), `file_size` its size. Pure (no file access, no library). Raises `SafetensorsError`
    (a PyTorch checkpoint given as safetensors is named as such)."""
    if sniff(head) == "pickle":
        raise SafetensorsError(misnamed(path, "pickle"))
    if file_size < 8 or len(head) < 8:
        raise SafetensorsError(f"{path}: not a safetensors file ({file_size} bytes, shorter than the "
                               "8-byte header length)")
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > MAX_HEADER:
        raise SafetensorsError(f"{path}: not a safetensors file (header length {n} is not in 2..{MAX_HEADER})")
    if 8 + n > file_size or len(head) < 8 + n:
        raise SafetensorsError(f"{path}: truncated or not a safetensors file (header length {n}, "
                               f"file size {file_size})")
    try:
        header = json.loads(head[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_reject_constant)
    except RecursionError:
        raise SafetensorsError(f"{path}: corrupt safetensors header (JSON nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop(METADATA_KEY, None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: corrupt safetensors header ({METADATA_KEY} is not a map of "
                               "strings to strings)")
    try:
        entries = {name: _entry(name, raw) for name, raw in header.items()}
    except ValueError as e:
        raise SafetensorsError(f"{path}: corrupt safetensors header: {e}") from None
    data_size, covered = file_size - 8 - n, 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin != covered:
            what = "overlaps the previous tensor" if e.begin < covered else f"leaves a gap at byte {covered}"
            raise SafetensorsError(f"{path}: corrupt safetensors header: tensor {name!r} at bytes "
                                   f"[{e.begin}, {e.end}) {what}")
        covered = e.end
    if covered != data_size:
        problem = "truncated" if covered > data_size else "corrupt"
        raise SafetensorsError(f"{path}: {problem} safetensors file: the tensors cover {covered} bytes of "
                               f"data, the file holds {data_size}")
    return Header(entries, metadata, 8 + n)


def _library_check(path: str) -> None:
    """Second opinion: the safetensors library parses and validates the header (no data is read)."""
    try:
        with safetensors.safe_open(path, framework="numpy"):
            pass
    except safetensors.SafetensorError as e:
        raise SafetensorsError(f"{path}: invalid safetensors file ({e})") from None


class SafetensorsFile:
    """An open, validated `.safetensors` file. `entries` / `metadata` come from the header;
    `read(name)` copies one tensor, `view(name)` maps it (zero-copy, read-only `np.memmap`).

    Raises `SafetensorsError` (file named) for an invalid file and `InputError` for a missing or
    unreadable one. Close it (or use `with`); views stay valid after `close()`.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a folder; expected a .safetensors file") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot open ({e.strerror or e})") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            head = self._file.read(8)
            if len(head) == 8:
                head += self._file.read(min(struct.unpack("<Q", head)[0], MAX_HEADER))
            header = parse_header(self.path, head, size)
            _library_check(self.path)
        except OSError as e:
            self._file.close()
            raise InputError(f"{self.path}: cannot read ({e.strerror or e})") from None
        except BaseException:
            self._file.close()
            raise
        self.entries, self.metadata, self.data_start = header.entries, header.metadata, header.data_start
        self._map: np.memmap | None = None

    def keys(self) -> Iterator[str]:
        return iter(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name].dtype

    def read(self, name: str) -> np.ndarray:
        """One tensor read into a fresh array (positional reads: threads may share the file)."""
        e = self.entries[name]
        buf = np.empty(e.end - e.begin, np.uint8)
        view, done = memoryview(buf), 0
        while done < len(buf):
            try:
                n = os.preadv(self._file.fileno(), [view[done:]], self.data_start + e.begin + done)
            except OSError as err:
                raise InputError(f"{self.path}: cannot read tensor {name!r} ({err.strerror or err})") from None
            if n <= 0:
                raise SafetensorsError(f"{self.path}: truncated while reading tensor {name!r}")
            done += n
        return buf.view(e.dtype).reshape(e.shape)

    def view(self, name: str) -> np.ndarray:
        """One tensor as a read-only view of the file's memory map (no copy)."""
        e = self.entries[name]
        if e.end == e.begin:
            return np.zeros(e.shape, e.dtype)
        if self._map is None:
            self._map = np.memmap(self._file, dtype=np.uint8, mode="r")
        return self._map[self.data_start + e.begin:self.data_start + e.end].view(e.dtype).reshape(e.shape)

    def release(self, name: str) -> None:
        """Drop the resident pages that `view(name)` touched (touching the view again re-reads the
        file). For a view whose bytes now live elsewhere (a copy, a device, a written file)."""
        # numpy keeps the mmap.mmap of a memmap in `_mmap`; without it this is a no-op (an optimisation).
        mm = getattr(self._map, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        e = self.entries[name]
        page = mmap.PAGESIZE
        first = -(-(self.data_start + e.begin) // page) * page  # whole pages inside the tensor only
        last = (self.data_start + e.end) // page * page
        if last > first:
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)

    def close(self) -> None:
        """Closes the file; the memory map is only dropped (views keep it alive until they die)."""
        self._file.close()
        self._map = None

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_safetensors(path: str, specs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                      tensors: Iterable[tuple[str, np.ndarray]], metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file atomically, streaming.

    `specs` gives every tensor's (shape, dtype) up front (the header comes first); `tensors` then
    yields (name, array) one at a time, in any order, each exactly once. Only one tensor is held.
    Raises `OutputError` (path named) if the file cannot be written; nothing is left behind.
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
        header[METADATA_KEY] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    start = 8 + len(blob)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(start + offset)
            f.flush()
            written = set()
            for name, array in tensors:
                if name not in specs or name in written:
                    problem = "written twice" if name in written else "not in header"
                    raise ValueError(f"{path}: tensor {name!r} {problem}")
                shape, dtype = specs[name]
                array = np.asarray(array)
                if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
                    raise ValueError(f"{path}: tensor {name!r} is {array.shape} {array.dtype}, "
                                     f"header says {tuple(shape)} {np.dtype(dtype)}")
                _write_at(f.fileno(), np.ascontiguousarray(array).reshape(-1).view(np.uint8),
                          start + header[name]["data_offsets"][0])
                written.add(name)
            missing = set(specs) - written
            if missing:
                raise ValueError(f"{path}: {len(missing)} tensors never written, e.g. {sorted(missing)[:3]}")


def _write_at(fd: int, data: np.ndarray, offset: int) -> None:
    """All of `data` (a uint8 array; no copy) at `offset` of `fd`."""
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)

