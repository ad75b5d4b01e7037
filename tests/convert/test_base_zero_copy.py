"""`load_base` builds the Flax tree from views of the memory-mapped file (no copy), equal to the params
written by `convert_base` (C-contiguous copies on disk); `device=...` puts each leaf on a device; a cast
copies; the file stays usable."""
import gc
import os

import jax
import numpy as np
import pytest

from animatediff_jax.checkpoint import load_params
from animatediff_jax.params import flatten
from convert.base import convert_base, load_base
from tests.convert.ldm_fixtures import build, ldm_state_dict, save_single_file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("zero_copy")
    sd = ldm_state_dict(*build("small"))
    single = save_single_file(str(d / "m.safetensors"), sd)
    written = convert_base(single, str(d / "converted"), progress=False)  # contiguous copies, on disk
    ref = {name: flatten(load_params(written[name])[0]) for name in ("unet", "vae", "text_encoder")}
    return single, ref


def _base_buffer(a: np.ndarray):
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base
    return a.base.obj if isinstance(a.base, memoryview) else a.base


def test_leaves_are_views_of_the_file_and_equal_the_converted_params(files):
    path, ref = files
    m = load_base(path, progress=False)
    gc.collect()  # the plan is closed; the views must keep the map alive
    for name in ("unet", "vae", "text_encoder"):
        leaves = flatten(getattr(m, name))
        assert set(leaves) == set(ref[name])
        for p, a in leaves.items():
            assert isinstance(a, np.ndarray) and not a.flags.writeable and not a.flags.owndata, p
            assert type(_base_buffer(a)).__name__ == "mmap", p
            np.testing.assert_array_equal(a, ref[name][p], err_msg="/".join(p))
    kernel = m.unet["conv_in"]["kernel"]  # (3, 3, in, out): a transposed view, not a copy
    assert kernel.shape[:2] == (3, 3) and not kernel.flags.c_contiguous
    with open(path, "rb") as f:  # the user's file is untouched and readable while the views live
        assert len(f.read(8)) == 8
    assert os.path.getsize(path) > 0


def test_device_and_cast(files):
    path, ref = files
    m = load_base(path, progress=False, device=True)
    on_device = flatten(m.unet)
    assert all(isinstance(x, jax.Array) for x in on_device.values())
    for p, x in on_device.items():
        np.testing.assert_array_equal(np.asarray(x), ref["unet"][p], err_msg="/".join(p))
    cpu = jax.devices("cpu")[1]
    m = load_base(path, progress=False, device=lambda p, shape: cpu)
    assert all(x.devices() == {cpu} for x in flatten(m.vae).values())
    m = load_base(path, progress=False, dtype="bfloat16")
    for p, a in flatten(m.text_encoder).items():
        assert a.dtype == np.dtype("bfloat16") and a.flags.writeable, p
        np.testing.assert_array_equal(a, ref["text_encoder"][p].astype(a.dtype), err_msg="/".join(p))
