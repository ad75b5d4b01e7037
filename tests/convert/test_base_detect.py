"""Checkpoint detection from key names and shapes: kind, model family, motion-module version."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from convert.detect import checkpoint_kind, describe, model_family, motion_version
from convert.io import CheckpointError

MM = "down_blocks.0.motion_modules.0.temporal_transformer."
PE = MM + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"


@pytest.mark.parametrize("keys,kind", [
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "lora_kohya"),
    (["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"], "lora_kohya"),
    (["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"], "lora_peft"),
    (["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"], "lora_diffusers_old"),
    ([MM + "transformer_blocks.0.attention_blocks.0.processor.to_q_lora.up.weight"], "motion_lora"),
    ([PE, MM + "norm.weight"], "motion_module"),
    (["module." + PE], "motion_module"),
    (["down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"], "motion_adapter"),
    (["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"], "ldm"),
    (["conditioner.embedders.1.model.positional_embedding"], "ldm"),
    (["down_blocks.0.resnets.0.conv1.weight", "time_embedding.linear_1.weight"], "diffusers_unet"),
    (["encoder.down_blocks.0.resnets.0.conv1.weight"], "diffusers_vae"),
    (["text_model.embeddings.token_embedding.weight", "text_model.encoder.layers.0.mlp.fc1.weight"], "clip_text"),
    (["something.else"], "unknown"),
])
def test_kinds(keys, kind):
    assert checkpoint_kind(keys) == kind


def test_families():
    def fam(shapes):
        return model_family(list(shapes), shapes.__getitem__)
    to_k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    assert fam({to_k: (320, 768)}) == "sd1"
    assert fam({to_k: (320, 1024)}) == "sd2"
    assert fam({"cond_stage_model.model.token_embedding.weight": (49408, 1024)}) == "sd2"
    assert fam({"model.diffusion_model.label_emb.0.0.weight": (1280, 2816)}) == "sdxl"
    assert fam({"text_model.embeddings.token_embedding.weight": (49408, 768)}) == "sd1"
    assert fam({"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}) == "sd1"


def test_motion_versions():
    mid = "mid_block.motion_modules.0.temporal_transformer.norm.bias"
    up2 = "up_blocks.2.motion_modules.0.temporal_transformer.norm.weight"
    shapes = {PE: (1, 24, 320), up2: (640,)}
    assert motion_version(shapes, shapes.__getitem__) == "v1"
    assert motion_version({**shapes, mid: (1280,)}, {**shapes, mid: (1280,)}.__getitem__) == "v2"
    v3 = {"module." + PE: (1, 32, 320), "module." + up2: (640,)}
    assert motion_version(v3, v3.__getitem__) == "v3"
    no_pe = {"module." + up2: (640,), "module." + mid: (1280,)}  # trainer save: pe not stored
    assert motion_version(no_pe, no_pe.__getitem__) is None
    xl = {PE: (1, 32, 320), up2: (320,)}
    with pytest.raises(CheckpointError, match="mm.ckpt: an SDXL motion module"):
        motion_version(xl, xl.__getitem__, "mm.ckpt")


def test_describe_counts_without_loading(tmp_path):
    path = str(tmp_path / "mm.safetensors")
    save_file({PE: np.zeros((1, 32, 8), np.float16), MM + "norm.weight": np.ones(8, np.float32)}, path)
    info = describe(path)
    assert info["kind"] == "motion_module" and info["version"] == "v3"
    assert info["parameters"] == 32 * 8 + 8 and info["dtypes"] == {"float16": 1, "float32": 1}


def test_describe_module_without_position_encoding(tmp_path):
    path = str(tmp_path / "checkpoint.safetensors")
    save_file({"module." + MM + "norm.weight": np.ones(8, np.float32)}, path)
    info = describe(path)
    assert info["kind"] == "motion_module"
    assert info["version"].startswith("not stored (no pos_encoder.pe)") and "--motion-version" in info["version"]
