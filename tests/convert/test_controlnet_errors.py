"""Bad ControlNet / SparseCtrl inputs: one clear `InputError` naming the file, before any tensor is
used. SDXL and SD2.x ControlNets, a SparseCtrl or ControlNet given where a motion module or a base
model is expected (and the reverse), truncated and corrupt files, NaN/Inf tensors."""
import os

import numpy as np
import pytest

from animatediff_jax.errors import InputError, UsageError
from convert.base import load_base
from convert.controlnet import convert_controlnet, load_controlnet
from convert.io import CheckpointError
from convert.motion import load_motion_module
from tests.convert import controlnet_fixtures as F
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(state dict, folder) of the small ControlNet."""
    model = F.controlnet("small")
    return F.state_dict(model), F.save_folder(model, str(tmp_path_factory.mktemp("cn") / "small"))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """(original .ckpt path, folder) of an RGB SparseCtrl."""
    root = tmp_path_factory.mktemp("sc")
    model = F.sparsectrl("rgb")
    path = F.save_torch(F.to_original_sparsectrl(F.state_dict(model)), str(root / "v3_sd15_sparsectrl_rgb.ckpt"))
    return path, F.save_folder(model, str(root / "folder"))


def _sdxl_controlnet():
    """A tiny ControlNet in the SDXL layout (size-and-time `add_embedding`, two transformer layers)."""
    from diffusers import ControlNetModel
    return F.randomize(ControlNetModel(**dict(
        F.CONTROLNET_SMALL, addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=4 * 6 + 32, transformer_layers_per_block=(2, 1))))


def test_sdxl_controlnets_are_refused_in_each_layout(tmp_path):
    model = _sdxl_controlnet()
    sd = F.state_dict(model)
    folder = F.save_folder(model, str(tmp_path / "sdxl"))
    ldm = F.to_ldm({k: v for k, v in sd.items() if not k.startswith("add_embedding.")}, 1)
    ldm.update({f"control_model.label_emb.0.{2 * i}.{p}": sd[f"add_embedding.linear_{i + 1}.{p}"]
                for i in range(2) for p in ("weight", "bias")})
    for path in (folder, F.save_safetensors(ldm, str(tmp_path / "controlnet-sdxl.safetensors")),
                 F.save_safetensors(sd, str(tmp_path / "diffusers_sdxl.safetensors"))):
        with pytest.raises(CheckpointError, match="SDXL ControlNets are not supported \\(SD1.x only\\)") as e:
            load_controlnet(path)
        shown = os.path.join(path, "diffusion_pytorch_model.safetensors") if os.path.isdir(path) else path
        assert str(e.value).startswith(shown + ":")


def test_sdxl_width_and_sd2_controlnets_are_refused(small, tmp_path):
    sd, _ = small
    for dim, family in ((2048, "SDXL"), (1024, "SD2.x")):
        wide = dict(sd)
        for k in [k for k in sd if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
            wide[k] = np.zeros((sd[k].shape[0], dim), np.float32)
        path = F.save_torch(F.to_ldm(wide, 1), str(tmp_path / f"cn{dim}.pth"))
        with pytest.raises(CheckpointError, match=f"{family} ControlNets are not supported \\(SD1.x only\\)"):
            load_controlnet(path)


def test_sparsectrl_given_as_motion_module_names_the_flag(sparse):
    path, folder = sparse
    for source in (path, folder):
        with pytest.raises(InputError) as e:
            load_motion_module(source)
        message = str(e.value)
        assert message.startswith(str(source)) and "SparseCtrl" in message and "--sparsectrl" in message
        assert "not a motion module" in message


def test_controlnet_given_as_motion_module_or_base_names_the_flag(small, tmp_path):
    sd, folder = small
    path = F.save_torch(F.to_ldm(sd, 1), str(tmp_path / "control_v11p_sd15_canny.pth"))
    with pytest.raises(InputError, match="ControlNet, not a motion module; pass it with --controlnet"):
        load_motion_module(path)
    with pytest.raises(InputError, match="ControlNet, not a Stable Diffusion model; pass it with --controlnet"):
        load_base(path, progress=False)


def test_other_kinds_given_as_controlnet_are_named(tmp_path):
    motion = str(tmp_path / "v3_sd15_mm.ckpt")
    write_original(original_state_dict(random_adapter("v3")), motion)
    with pytest.raises(CheckpointError, match="v3_sd15_mm.ckpt: this is an AnimateDiff motion module .*"
                                              "--motion-module"):
        load_controlnet(motion)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"
    lora = F.save_safetensors({key: np.zeros((4, 32), np.float32)}, str(tmp_path / "style.safetensors"))
    with pytest.raises(CheckpointError, match="style.safetensors: this is a LoRA .*--lora"):
        load_controlnet(lora)
    with pytest.raises(CheckpointError, match="other.safetensors: not a ControlNet or SparseCtrl file"):
        load_controlnet(F.save_safetensors({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors")))


@pytest.mark.parametrize("ext", ["safetensors", "pth"])
def test_truncated_file(small, tmp_path, ext):
    sd, _ = small
    path = str(tmp_path / f"control_v11p_sd15_canny.{ext}")
    (F.save_torch if ext == "pth" else F.save_safetensors)(F.to_ldm(sd, 1), path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(InputError) as e:
        load_controlnet(path)
    assert str(e.value).startswith(path + ":") and "truncated" in str(e.value)


def test_folder_problems(small, sparse, tmp_path):
    _, folder = small
    with pytest.raises(CheckpointError, match="not a diffusers ControlNet folder: .*config.json is missing"):
        load_controlnet(str(tmp_path))
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(CheckpointError, match="not a ControlNet config \\(_class_name 'UNet2DConditionModel'"):
        load_controlnet(str(other))
    with pytest.raises(UsageError, match="overrides: unknown ControlNet config keys \\['heads'\\]"):
        load_controlnet(folder, overrides={"heads": 8})
    weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    config = os.path.join(folder, "config.json")
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    os.symlink(weights, mismatched / "diffusion_pytorch_model.safetensors")
    text = open(config).read()
    (mismatched / "config.json").write_text(text.replace('"layers_per_block": 1', '"layers_per_block": 2'))
    with pytest.raises(CheckpointError, match="does not match our ControlNet with config .* missing"):
        load_controlnet(str(mismatched))


def test_nonfinite_tensors_are_named(small, tmp_path, capsys):
    sd, _ = small
    bad = dict(sd, **{"controlnet_mid_block.bias": np.full_like(sd["controlnet_mid_block.bias"], np.nan)})
    path = F.save_safetensors(F.to_ldm(bad, 1), str(tmp_path / "nan.safetensors"))
    load_controlnet(path, dtype="float32")  # same dtype: nothing touched, nothing checked
    assert "NaN" not in capsys.readouterr().err
    load_controlnet(path, dtype="float16")  # a loader warns
    assert "control_model.middle_block_out.0.bias' (NaN)" in capsys.readouterr().err
    out = str(tmp_path / "out.safetensors")
    with pytest.raises(InputError, match="nan.safetensors: 1 tensor holds NaN/Inf: .*controlnet_mid_block/bias"):
        convert_controlnet(path, out)
    assert not os.path.exists(out)
    convert_controlnet(path, out, allow_nonfinite=True)
    assert os.path.isfile(out)
