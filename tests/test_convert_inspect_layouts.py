"""`python -m convert inspect` names the model family (SD1/SD2/SDXL) of every kind of file whose keys show
it -- the project's own Flax files too -- and reads every folder layout the loaders accept (MotionAdapter,
ControlNet and PEFT folders besides SD ones); `export-motion` to a PyTorch pickle without torch is one
`error:` line before any work."""
import json
import os
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.__main__ import main

MOTION = motion_path(MINIATURE, "B")
UNET_TO_K = "down_blocks_0/attentions_0/transformer_blocks_0/attn2/to_k/kernel"  # a Flax UNet's key: (in, out)


def inspect_json(capsys, *paths) -> list[dict]:
    """`inspect --json` of `paths` (each must be described), one dict per weights file."""
    capsys.readouterr()
    assert main(["inspect", "--json", *paths]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def lora_file(path, keys_shapes: dict) -> str:
    save_file({k: np.zeros(s, np.float16) for k, s in keys_shapes.items()}, str(path))
    return str(path)


# --------------------------------------------------------------------------- 1. the family of every kind

def test_the_shipped_flax_files_and_lora_state_their_family(capsys):
    infos = inspect_json(capsys, os.path.join(MINIATURE, "base"), os.path.join(MINIATURE, "dreambooth"), MOTION,
                         os.path.join(MINIATURE, "lora_checker.safetensors"))
    assert [i["kind"] for i in infos] == ["flax"] * 7 + ["lora_kohya"]
    assert [i.get("family") for i in infos] == ["sd1"] * 8
    assert main(["inspect", MOTION]) == 0
    assert "  family       sd1\n" in capsys.readouterr().out


@pytest.mark.parametrize("width,family", [(768, "sd1"), (1024, "sd2"), (2048, "sdxl")])
def test_a_flax_unet_family_is_its_cross_attention_width(tmp_path, capsys, width, family):
    """Flax kernels are (in, out): the width is read from the kernel's first axis, not its last."""
    path = str(tmp_path / "unet.safetensors")
    save_file({UNET_TO_K: np.zeros((width, 320), np.float16),
               "time_embedding/linear_1/kernel": np.zeros((320, 1280), np.float16)}, path,
              metadata={"format": "flax", "config_class": "UNetConfig"})
    assert inspect_json(capsys, path)[0]["family"] == family


def test_lora_families(tmp_path, capsys):
    kohya_sd2 = lora_file(tmp_path / "sd2.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 1024),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, 4)})
    kohya_xl = lora_file(tmp_path / "xl.safetensors", {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (768, 4)})
    peft = lora_file(tmp_path / "peft.safetensors", {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 768),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (320, 4)})
    text_sd2 = lora_file(tmp_path / "te.safetensors", {
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1024),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (1024, 4)})
    conv_only = lora_file(tmp_path / "conv.safetensors", {
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": (4, 320, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": (320, 4, 1, 1)})
    infos = inspect_json(capsys, kohya_sd2, kohya_xl, peft, text_sd2, conv_only)
    assert [i.get("family") for i in infos] == ["sd2", "sdxl", "sd1", "sd2", None]  # convolutions do not show it


def test_an_sdxl_motion_module_is_described_not_refused(tmp_path, capsys):
    head = "motion_modules.0.temporal_transformer."
    path = lora_file(tmp_path / "mm_sdxl.safetensors", {
        f"down_blocks.0.{head}transformer_blocks.0.attention_blocks.0.pos_encoder.pe": (1, 32, 320),
        f"up_blocks.2.{head}norm.weight": (320,)})
    info = inspect_json(capsys, path)[0]
    assert (info["kind"], info["family"]) == ("motion_module", "sdxl") and "version" not in info


# --------------------------------------------------------------------------- 2. every folder layout

def test_the_motion_adapter_folder_export_motion_writes_is_inspected(tmp_path, capsys):
    adapter = str(tmp_path / "adapter")
    assert main(["export-motion", MOTION, adapter, "--format", "diffusers"]) == 0
    info = inspect_json(capsys, adapter)[0]
    assert info["file"] == os.path.join(adapter, "diffusion_pytorch_model.safetensors")
    assert info["folder"] == "diffusers MotionAdapter folder"
    assert (info["kind"], info["family"], info["version"]) == ("motion_adapter", "sd1", "v2")  # as the module's
    weights = inspect_json(capsys, info["file"])[0]  # the weights file alone: the version from its pos_embed.pe
    assert (weights["kind"], weights["version"]) == ("motion_adapter", "v2") and "folder" not in weights


def test_controlnet_peft_and_pipeline_folders(tmp_path, capsys):
    def folder(name, config_name, config, weights_name, keys_shapes):
        path = tmp_path / name
        path.mkdir(parents=True)
        (path / config_name).write_text(json.dumps(config))
        lora_file(path / weights_name, keys_shapes)
        return str(path)
    control = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "controlnet_down_blocks.0.weight": (320, 320, 1, 1),
               "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768)}
    cn = folder("cn", "config.json", {"_class_name": "ControlNetModel"}, "diffusion_pytorch_model.safetensors", control)
    folder("pipe/controlnet", "config.json", {"_class_name": "ControlNetModel"}, "diffusion_pytorch_model.safetensors",
           control)
    peft = folder("peft", "adapter_config.json", {"peft_type": "LORA", "r": 4, "lora_alpha": 4}, "adapter_model.safetensors",
                  {"base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (4, 768),
                   "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (320, 4)})
    infos = inspect_json(capsys, cn, str(tmp_path / "pipe"), peft)
    assert [(i["folder"], i["kind"], i["family"]) for i in infos] == [
        ("diffusers ControlNetModel folder", "controlnet", "sd1"), ("diffusers ControlNetModel folder", "controlnet", "sd1"),
        ("PEFT LoRA adapter folder", "lora_peft", "sd1")]
    assert infos[1]["file"] == os.path.join(tmp_path, "pipe", "controlnet", "diffusion_pytorch_model.safetensors")


def test_sd_folders_name_their_layout_and_other_folders_are_refused(tmp_path, capsys):
    infos = inspect_json(capsys, os.path.join(MINIATURE, "base"))
    assert {i["folder"] for i in infos} == {"converted base folder (convert base)"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert main(["inspect", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'other'}: a folder that is not a model folder")
    assert "MotionAdapter" in err[0] and "PEFT" in err[0]


# --------------------------------------------------------------------------- 3. a pickle output without torch

@pytest.mark.parametrize("command", ["export-motion", "export-motion-lora"])
def test_a_pickle_output_without_torch_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    import convert.commands_motion as commands
    import convert.lora as lora

    def no_work(*args, **kwargs):
        raise AssertionError("read its input before refusing the output")
    monkeypatch.setattr(commands, "load_motion", no_work)
    monkeypatch.setattr(lora, "read_factors", no_work)
    out = tmp_path / "mm.ckpt"
    assert main([command, MOTION, str(out)]) == 1  # a missing extra, as reading a .ckpt without torch
    want = f'error: {out}: writing a PyTorch pickle needs torch (pip install -e ".[torch]"); or write a .safetensors file'
    assert capsys.readouterr().err.splitlines() == [want]
    assert os.listdir(tmp_path) == []


def test_export_original_refuses_a_pickle_without_torch_before_warning(tmp_path, monkeypatch, capsys):
    from convert.commands_motion import load_motion
    from convert.export import export_original
    from animatediff_jax.errors import OutputError
    mm = load_motion(MOTION)  # 4 heads, 16 groups: a pickle would warn that it cannot store them
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OutputError, match="needs torch"):
        export_original(mm.params, mm.config, tmp_path / "mm.ckpt")
    assert capsys.readouterr().err == "" and os.listdir(tmp_path) == []
