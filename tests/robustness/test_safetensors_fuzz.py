"""Property-based fuzzing of the one `.safetensors` reader (issue 13, kind 1): mutated headers and
bytes give either one clean `InputError` naming the file, or exactly the tensors the `safetensors`
library reads from that same file; and the reader's own header check (without the library) is at
least as strict as the library: whatever the library refuses, `parse_header` refuses too."""
import functools
import json
import os
import struct

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from animatediff_jax.errors import InputError
from animatediff_jax.safetensors_file import SafetensorsError, SafetensorsFile, parse_header
from tests.robustness.safetensors_files import tensors

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 300) | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=6) | st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "U32", "X"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


@functools.lru_cache(maxsize=None)
def _valid_bytes() -> bytes:
    return safetensors.numpy.save(tensors(), {"format": "pt"})


def _valid() -> tuple[dict, bytes, bytes]:
    """(header object, data buffer, whole file) of a valid file (a fresh header object each call)."""
    raw = _valid_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:], raw


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _library_tensors(path: str) -> dict[str, tuple[str, tuple, bytes]] | None:
    """{name: (dtype, shape, bytes)} as the safetensors library reads the file, None if it refuses."""
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            out = {}
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = (str(t.dtype), tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            return out
    except safetensors.SafetensorError:
        return None


def _check(path: str) -> None:
    """The property: a clean InputError naming the file, or the library's tensors exactly."""
    try:
        with SafetensorsFile(path) as f:
            ours = {k: (f.read(k), np.asarray(f.view(k))) for k in f.keys()}
    except InputError as e:
        assert str(e).startswith(path + ": ") and "\n" not in str(e)
        return
    ref = _library_tensors(path)
    assert ref is not None, "accepted a file the safetensors library refuses"
    assert set(ours) == set(ref)
    for k, (read, view) in ours.items():
        dtype, shape, data = ref[k]
        for a in (read, view):
            assert a.shape == shape
            assert a.reshape(-1).view(np.uint8).tobytes() == data
            assert str(torch.from_numpy(np.zeros(0, a.dtype)).dtype) == dtype if a.dtype.kind != "V" \
                else dtype == "torch.bfloat16"


def _mutate_entry(data, entry: dict) -> dict:
    """One plausible edit of a header entry: a field or one element replaced by any JSON value, the
    offsets shifted together (same length: overlaps and gaps), or the shape reversed."""
    entry = dict(entry)
    op = data.draw(st.sampled_from(["field", "element", "shift", "reverse"]))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    offsets = entry.get("data_offsets")
    if op == "shift" and isinstance(offsets, list) and all(isinstance(o, int) for o in offsets):
        delta = data.draw(st.integers(-64, 64))
        entry["data_offsets"] = [o + delta for o in offsets]
    elif op == "reverse" and isinstance(entry.get("shape"), list):
        entry["shape"] = entry["shape"][::-1]
    elif op == "element" and isinstance(entry.get(field), list) and entry[field]:
        i = data.draw(st.integers(0, len(entry[field]) - 1))
        entry[field] = [*entry[field][:i], data.draw(json_values), *entry[field][i + 1:]]
    else:
        entry[field] = data.draw(json_values)
    return entry


def _slide(data, header: dict, buffer: bytes) -> tuple[dict, bytes]:
    """Shift every tensor from some offset on by delta and the buffer's end with them: a pure overlap
    (delta < 0) or a pure gap (delta > 0), everything else consistent."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    at = data.draw(st.sampled_from(sorted(v["data_offsets"][0] for v in entries.values())))
    delta = data.draw(st.integers(-16, 16))
    slid = {k: ({**v, "data_offsets": [o + delta for o in v["data_offsets"]]} if k in entries
                and v["data_offsets"][0] >= at else v) for k, v in header.items()}
    return slid, (buffer[:len(buffer) + delta] if delta < 0 else buffer + b"\0" * delta)


def _write(path: str, blob: bytes, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)
    return path


@FUZZ
@given(data=st.data())
def test_mutated_header_fields(folder, data):
    header, buffer, _ = _valid()
    if data.draw(st.booleans()):
        header, buffer = _slide(data, header, buffer)
    names = sorted(header)
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(names + ["new"]))
        if name == "__metadata__" or data.draw(st.integers(0, 3)) == 0:
            header[name] = data.draw(json_values)
        else:
            header[name] = _mutate_entry(data, header[name] if isinstance(header.get(name), dict) else {})
    cut = data.draw(st.integers(-8, 8))
    buffer = buffer[:len(buffer) + cut] if cut < 0 else buffer + b"\0" * cut
    _check(_write(str(folder / "m.safetensors"), json.dumps(header).encode(), buffer))


@FUZZ
@given(data=st.data())
def test_mutated_bytes(folder, data):
    _, _, raw = _valid()
    raw = bytearray(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, n + 8 - 1) | st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from([0, 0x20, 0x22, 0x2C, 0x2D, 0x30, 0x39, 0x5B, 0x5D, 0x7B, 0x7D, 0xFF])
                           | st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw))):]
    path = str(folder / "m.safetensors")
    open(path, "wb").write(bytes(raw))
    _check(path)


@FUZZ
@given(data=st.data())
def test_own_header_check_is_at_least_as_strict_as_the_library(folder, data):
    header, buffer, _ = _valid()
    name = data.draw(st.sampled_from(sorted(header)))
    if data.draw(st.booleans()):
        header, buffer = _slide(data, header, buffer)
    elif name == "__metadata__" or data.draw(st.integers(0, 3)) == 0:
        header[name] = data.draw(json_values)
    else:
        header[name] = _mutate_entry(data, header[name])
    path = _write(str(folder / "m.safetensors"), json.dumps(header).encode(), buffer)
    raw = open(path, "rb").read()
    if _library_tensors(path) is None:
        try:
            parse_header(path, raw, os.path.getsize(path))
        except SafetensorsError:
            return
        raise AssertionError(f"the library refuses this header but parse_header accepts it: {header[name]!r}")
