"""Pickle checkpoints (.ckpt/.pt/.bin) are read only through torch.load(weights_only=True): mutated
bytes of a zip checkpoint or a legacy pickle give one clean `CheckpointError` naming the file, or
exactly what `torch.load(weights_only=True)` itself returns (memory-mapped for zip checkpoints, as
the reader loads them); never another exception, never code."""
import functools
import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convert.io import CheckpointError, load_state_dict, torch_to_numpy

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@functools.lru_cache(maxsize=None)
def _valid(legacy: bool) -> bytes:
    g = torch.Generator().manual_seed(0)
    obj = {"state_dict": {"a.weight": torch.randn(3, 4, generator=g), "b": torch.arange(5)}, "epoch": 1}
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("pickle_fuzz")


@FUZZ
@given(data=st.data(), legacy=st.booleans())
def test_mutated_pickle_checkpoints(folder, data, legacy):
    raw = bytearray(_valid(legacy))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(1, len(raw))):]
    path = str(folder / "m.ckpt")
    open(path, "wb").write(bytes(raw))
    try:
        ours = load_state_dict(path)
    except CheckpointError as e:
        assert str(e).startswith(path + ": ") and "\n" not in str(e)
        return
    with warnings.catch_warnings():  # as the reader loads, torch's protocol warning included
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        ref = torch.load(path, map_location="cpu", weights_only=True, mmap=not legacy)
    while isinstance(ref, dict) and isinstance(ref.get("state_dict"), dict):
        ref = ref["state_dict"]
    ref = {k: v for k, v in ref.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    assert set(ours) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(ours[k], torch_to_numpy(v))


def test_a_damaged_protocol_byte_raises_no_torch_warning(tmp_path):
    """Found in CI's warnings summary: a legacy checkpoint whose pickle protocol byte was damaged loads
    (torch reads the rest), but torch's "Detected pickle protocol 131" UserWarning reached the user."""
    raw = bytearray(_valid(legacy=True))
    assert raw[:2] == b"\x80\x02"
    raw[1] = 131
    path = tmp_path / "p131.ckpt"
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = load_state_dict(str(path))
    assert set(ours) == {"a.weight", "b"}
