"""Original AnimateDiff motion-module files and MotionAdapter folders -> Flax motion params."""
import numpy as np
import pytest
import torch
from diffusers import MotionAdapter

from animatediff_jax.params import flatten
from convert.motion import MotionModuleError, load_motion_module
from tests.convert.motion_helpers import adapter_flax, original_state_dict, random_adapter, write_original


def assert_same_tree(ours, ref):
    ours, ref = flatten(ours), flatten(ref)
    assert set(ours) == set(ref)
    for path, value in ref.items():
        np.testing.assert_array_equal(np.asarray(ours[path]), value, err_msg="/".join(path))


@pytest.mark.parametrize("version,channels,layers", [("v1", (32, 64), 1), ("v2", (32, 64, 64), 2), ("v3", (64, 32), 1)])
@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_original_file_matches_diffusers_and_ours(tmp_path, version, channels, layers, suffix):
    adapter = random_adapter(version, channels, layers)
    path = tmp_path / f"mm{suffix}"
    write_original(original_state_dict(adapter), path)
    # the file we wrote is what diffusers' own single-file loader understands as this adapter
    adapter.save_config(tmp_path)
    loaded = MotionAdapter.from_single_file(str(path), config=str(tmp_path))
    for k, v in adapter.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)

    mm = load_motion_module(path, heads=2, norm_num_groups=8)
    assert_same_tree(mm.params, adapter_flax(adapter))
    assert mm.version == version
    assert mm.block_out_channels == channels and mm.layers_per_block == layers
    assert mm.config.max_seq_length == adapter.config.motion_max_seq_length
    assert mm.config.use_mid_block == (version == "v2")
    assert mm.config.resnet_norm == ("joint" if version == "v1" else "frame")
    assert mm.config.num_attention_heads == 2


@pytest.mark.parametrize("wrapper,prefix,suffix", [(True, False, ".ckpt"), (True, True, ".ckpt"),
                                                   (False, True, ".safetensors")])
def test_trainer_wrappers(tmp_path, wrapper, prefix, suffix):
    adapter = random_adapter("v2")
    path = tmp_path / f"mm{suffix}"
    write_original(original_state_dict(adapter), path, wrapper=wrapper, module_prefix=prefix)
    mm = load_motion_module(path, heads=2, norm_num_groups=8)
    assert_same_tree(mm.params, adapter_flax(adapter))
    assert mm.version == "v2"


def test_fp16_file_converted_to_float32(tmp_path):
    adapter = random_adapter("v3").half()
    write_original(original_state_dict(adapter), tmp_path / "mm.safetensors")
    mm = load_motion_module(tmp_path / "mm.safetensors", heads=2, norm_num_groups=8)
    leaves = flatten(mm.params).values()
    assert all(np.asarray(v).dtype == np.float32 for v in leaves)
    assert_same_tree(mm.params, {k: v for k, v in adapter_flax(adapter.float()).items()})


def test_motion_adapter_folder(tmp_path):
    adapter = random_adapter("v2", (32, 64), 1, heads=4)
    adapter.save_pretrained(tmp_path / "adapter")
    mm = load_motion_module(tmp_path / "adapter")
    assert_same_tree(mm.params, adapter_flax(adapter))
    assert (mm.config.num_attention_heads, mm.config.norm_num_groups, mm.config.max_seq_length) == (4, 8, 32)
    assert mm.version == "v2"


def test_sdxl_module_refused(tmp_path):
    adapter = random_adapter("v3", channels=(320, 32, 32), layers=1, groups=32)
    path = tmp_path / "mm_sdxl.safetensors"
    write_original(original_state_dict(adapter), path)
    with pytest.raises(MotionModuleError, match=r"mm_sdxl.safetensors.*SDXL"):
        load_motion_module(path)


def _bad_file(tmp_path, edit):
    sd = original_state_dict(random_adapter("v2"))
    edit(sd)
    path = tmp_path / "bad.ckpt"
    write_original(sd, path)
    return path


def test_missing_keys_listed(tmp_path):
    key = "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_k.weight"
    path = _bad_file(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(MotionModuleError, match=r"bad.ckpt.*1 missing keys.*up_blocks.1.motion_modules.1"):
        load_motion_module(path, heads=2, norm_num_groups=8)


def test_unexpected_keys_listed(tmp_path):
    path = _bad_file(tmp_path, lambda sd: sd.update({"controlnet_cond_embedding.conv_in.weight": torch.zeros(3)}))
    with pytest.raises(MotionModuleError, match=r"bad.ckpt.*unexpected keys.*controlnet_cond_embedding.conv_in"):
        load_motion_module(path, heads=2, norm_num_groups=8)


def test_shape_mismatch_named(tmp_path):
    key = "down_blocks.1.motion_modules.0.temporal_transformer.proj_in.weight"
    path = _bad_file(tmp_path, lambda sd: sd.update({key: torch.zeros(64, 32)}))
    with pytest.raises(MotionModuleError, match=r"shape mismatch.*down_blocks.1.motion_modules.0.proj_in.weight"):
        load_motion_module(path, heads=2, norm_num_groups=8)


def test_not_a_motion_module(tmp_path):
    path = tmp_path / "unet.safetensors"
    from safetensors.torch import save_file
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    with pytest.raises(MotionModuleError, match=r"unet.safetensors.*no AnimateDiff motion-module keys"):
        load_motion_module(path)


def test_position_encoding_regenerated_not_loaded(tmp_path):
    sd = original_state_dict(random_adapter("v3"))
    for k in sd:
        if k.endswith("pos_encoder.pe"):
            sd[k] = torch.randn_like(sd[k])
    write_original(sd, tmp_path / "mm.ckpt")
    with pytest.raises(MotionModuleError, match="not the standard sinusoid"):  # unless accepted (replace_pe)
        load_motion_module(tmp_path / "mm.ckpt", heads=2, norm_num_groups=8)
    with pytest.warns(UserWarning, match="not the standard sinusoid"):
        mm = load_motion_module(tmp_path / "mm.ckpt", heads=2, norm_num_groups=8, replace_pe=True)
    assert not any("pos" in "/".join(p) for p in flatten(mm.params))
    assert mm.config.max_seq_length == 32


def test_full_trainer_checkpoint_keeps_only_motion_modules(tmp_path):
    """The official trainer saves {"global_step", "state_dict": unet.state_dict()} with `module.` keys."""
    adapter = random_adapter("v3")
    sd = original_state_dict(adapter)
    sd.update({"conv_in.weight": torch.zeros(32, 4, 3, 3), "down_blocks.0.resnets.0.conv1.weight": torch.zeros(32, 32, 3, 3),
               "mid_block.attentions.0.proj_in.weight": torch.zeros(64, 64, 1, 1), "time_embedding.linear_1.bias": torch.zeros(128)})
    write_original(sd, tmp_path / "checkpoint.ckpt", wrapper=True, module_prefix=True)
    with pytest.warns(UserWarning, match="ignoring 4 image-UNet keys"):
        mm = load_motion_module(tmp_path / "checkpoint.ckpt", heads=2, norm_num_groups=8)
    assert_same_tree(mm.params, adapter_flax(adapter))


def test_bfloat16_file(tmp_path):
    adapter = random_adapter("v2")
    write_original({k: v.bfloat16() for k, v in original_state_dict(adapter).items()}, tmp_path / "mm.safetensors")
    mm = load_motion_module(tmp_path / "mm.safetensors", heads=2, norm_num_groups=8)
    assert_same_tree(mm.params, adapter_flax(adapter.bfloat16().float()))


def test_safetensors_loads_zero_copy_and_onto_a_device(tmp_path):
    import jax
    adapter = random_adapter("v2")
    write_original(original_state_dict(adapter), tmp_path / "mm.safetensors")
    mm = load_motion_module(tmp_path / "mm.safetensors", heads=2, norm_num_groups=8)
    leaves = flatten(mm.params)
    assert all(not v.flags.writeable and not v.flags.owndata for v in leaves.values())  # views of the mapped file
    assert_same_tree(mm.params, adapter_flax(adapter))
    on_device = load_motion_module(tmp_path / "mm.safetensors", heads=2, norm_num_groups=8, device=True)
    assert all(isinstance(v, jax.Array) for v in flatten(on_device.params).values())
    assert_same_tree(on_device.params, adapter_flax(adapter))
