"""Reading checkpoint files: lazy and exact; truncated, corrupt and code-running files refused by name."""
import os

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convert.io import CheckpointError, load_state_dict, open_state_dict

PAYLOAD_MARK = "payload_ran.txt"


class _Payload:
    """Unpickling this would write a file (a stand-in for arbitrary code)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g).half(),
            "c": torch.randn(2, 2, generator=g).bfloat16(), "ids": torch.arange(6).reshape(1, 6)}


def _check_equal(sd, tensors):
    assert set(sd) == set(tensors)
    for k, t in tensors.items():
        assert sd.shape(k) == tuple(t.shape)
        got = sd[k]
        if t.dtype == torch.bfloat16:
            assert got.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())
        else:
            np.testing.assert_array_equal(got, t.numpy())
        assert got.dtype == sd.dtype(k)


@pytest.mark.parametrize("name,wrap", [("w.safetensors", False), ("w.ckpt", False), ("w.ckpt", True),
                                       ("w.bin", False), ("w.pt", True)])
def test_reads_every_format_exactly(tmp_path, name, wrap):
    tensors = _tensors()
    path = str(tmp_path / name)
    if name.endswith(".safetensors"):
        save_file(tensors, path)
    else:
        obj = {"state_dict": {"state_dict": tensors}, "global_step": 3} if wrap else tensors
        torch.save(obj, path)
    with open_state_dict(path) as sd:
        _check_equal(sd, tensors)


def test_truncated_safetensors_is_refused_by_name(tmp_path):
    path = str(tmp_path / "cut.safetensors")
    save_file(_tensors(), path)
    size = os.path.getsize(path)
    for keep in (size - 7, 40, 5):
        with open(path, "r+b") as f:
            f.truncate(keep)
        with pytest.raises(CheckpointError, match="cut.safetensors.*(truncated|corrupt|not a safetensors)"):
            load_state_dict(path)


def test_corrupt_safetensors_header_is_refused(tmp_path):
    path = str(tmp_path / "bad.safetensors")
    save_file(_tensors(), path)
    data = bytearray(open(path, "rb").read())
    data[10:20] = b"\xff" * 10  # garbage inside the JSON header
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="bad.safetensors.*corrupt"):
        load_state_dict(path)
    open(path, "wb").write(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_state_dict(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, zip_format):
    mark = tmp_path / PAYLOAD_MARK
    path = str(tmp_path / "evil.ckpt")
    obj = {"state_dict": {"w": torch.ones(2)}, "hook": _Payload(str(mark))}
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    # Sanity: the file really does run the payload under plain pickle / weights_only=False.
    torch.load(path, weights_only=False)
    assert mark.exists()
    mark.unlink()
    with pytest.raises(CheckpointError, match="evil.ckpt: refused"):
        open_state_dict(path)
    assert not mark.exists()


def test_corrupt_and_non_checkpoint_pickles(tmp_path):
    path = str(tmp_path / "cut.ckpt")
    torch.save(_tensors(), path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError, match="cut.ckpt: corrupt or truncated"):
        open_state_dict(path)
    path = str(tmp_path / "list.pt")
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="list.pt: expected a state dict"):
        open_state_dict(path)
    path = str(tmp_path / "text.ckpt")
    open(path, "w").write("hello")
    with pytest.raises(CheckpointError, match="text.ckpt"):
        open_state_dict(path)
    with pytest.raises(CheckpointError, match="no such file"):
        open_state_dict(str(tmp_path / "missing.safetensors"))
