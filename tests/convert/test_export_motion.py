"""Flax motion params -> original AnimateDiff files and MotionAdapter folders, and back."""
import json
import os

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter

from animatediff_jax.params import flatten, unflatten
from convert.export import export_adapter, export_original
from convert.motion import MotionModuleError, load_motion_module, sinusoid
from tests.convert.motion_helpers import original_state_dict, random_adapter


def assert_state_dicts_equal(ours, ref):
    """Weights bit-equal; position encodings (regenerated, never loaded) equal to float32 rounding."""
    assert set(ours) == set(ref)
    for k, v in ref.items():
        tol = 1e-5 if k.endswith(".pe") else 0
        torch.testing.assert_close(ours[k], v, rtol=0, atol=tol, msg=k)


@pytest.mark.parametrize("version,suffix", [("v1", ".ckpt"), ("v2", ".safetensors"), ("v3", ".ckpt")])
def test_flax_to_original_round_trips(tmp_path, version, suffix):
    adapter = random_adapter(version, (32, 64), 1)
    torch.save(original_state_dict(adapter), tmp_path / "src.ckpt")
    mm = load_motion_module(tmp_path / "src.ckpt", heads=2, norm_num_groups=8)

    out = tmp_path / f"exported{suffix}"
    export_original(mm.params, mm.config, out)
    # same keys, shapes and values (pe regenerated with the module's length) as the original format
    if suffix == ".ckpt":
        written = torch.load(out, weights_only=True)
    else:
        from safetensors.torch import load_file
        written = load_file(out)
    assert_state_dicts_equal(written, original_state_dict(adapter))
    # diffusers' single-file loader reads it as the same adapter
    adapter.save_config(tmp_path)
    loaded = MotionAdapter.from_single_file(str(out), config=str(tmp_path))
    assert_state_dicts_equal(loaded.state_dict(), adapter.state_dict())
    # and ours reads it back bit-identically with the same config
    again = load_motion_module(out, heads=2, norm_num_groups=8)
    assert again.config == mm.config and again.version == version
    for path, v in flatten(mm.params).items():
        np.testing.assert_array_equal(flatten(again.params)[path], v)


def test_flax_to_motion_adapter_folder(tmp_path):
    adapter = random_adapter("v2", (32, 64, 64), 2, heads=4)
    mm = load_motion_module_from(adapter, tmp_path, heads=4)
    export_adapter(mm.params, mm.config, tmp_path / "out")
    loaded = MotionAdapter.from_pretrained(tmp_path / "out")
    assert_state_dicts_equal(loaded.state_dict(), adapter.state_dict())
    for key in ("block_out_channels", "motion_layers_per_block", "motion_num_attention_heads",
                "motion_norm_num_groups", "motion_max_seq_length", "use_motion_mid_block"):
        assert json.dumps(loaded.config[key]) == json.dumps(adapter.config[key]), key
    assert json.loads((tmp_path / "out" / "config.json").read_text())["_class_name"] == "MotionAdapter"
    # exporting again replaces the folder only once the new one is complete
    export_adapter(mm.params, mm.config, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["mm.ckpt", "out"]


def load_motion_module_from(adapter, tmp_path, heads=2):
    torch.save(original_state_dict(adapter), tmp_path / "mm.ckpt")
    return load_motion_module(tmp_path / "mm.ckpt", heads=heads, norm_num_groups=8)


def test_position_encoding_written_with_module_length(tmp_path):
    mm = load_motion_module_from(random_adapter("v1"), tmp_path)
    export_original(mm.params, mm.config, tmp_path / "v1.safetensors")
    from safetensors.numpy import load_file
    sd = load_file(tmp_path / "v1.safetensors")
    pes = {k: v for k, v in sd.items() if k.endswith("pos_encoder.pe")}
    assert len(pes) == 2 * (2 + 4)  # two attention blocks in each of 2 down + 4 up modules
    for k, v in pes.items():
        np.testing.assert_array_equal(v, sinusoid(24, v.shape[2]))


def test_bad_params_never_half_written(tmp_path):
    mm = load_motion_module_from(random_adapter("v3"), tmp_path)
    export_original(mm.params, mm.config, tmp_path / "keep.ckpt")
    before = (tmp_path / "keep.ckpt").read_bytes()
    flat = flatten(mm.params)
    flat[("up_blocks_0", "motion_modules_1", "proj_in", "kernel")] = np.zeros((3, 3), np.float32)
    with pytest.raises(MotionModuleError, match="shape mismatch"):
        export_original(unflatten(flat), mm.config, tmp_path / "keep.ckpt")
    with pytest.raises(MotionModuleError, match="shape mismatch"):
        export_adapter(unflatten(flat), mm.config, tmp_path / "folder")
    assert (tmp_path / "keep.ckpt").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.ckpt", "mm.ckpt"]


def test_unknown_suffix_refused(tmp_path):
    mm = load_motion_module_from(random_adapter("v3"), tmp_path)
    with pytest.raises(ValueError, match="mm.bin"):
        export_original(mm.params, mm.config, tmp_path / "mm.bin")

