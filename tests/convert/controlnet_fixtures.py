"""Tiny random ControlNets and SparseCtrl encoders (diffusers, PyTorch) and the files the converter
tests read, written in each real layout:

- diffusers folders (`save_pretrained`);
- LDM ("cldm") single files, built by inverting the key mapping (`to_ldm`): the encoder copy through
  `convert.ldm.unet_key_to_ldm`, the hint block / zero convs / middle_block_out as the cldm code names
  them (`ControlNet.input_hint_block` = Sequential(conv, SiLU, conv, SiLU, ..., zero conv),
  `zero_convs[i] = TimestepEmbedSequential(zero conv)`, `middle_block_out = TimestepEmbedSequential(...)`).
  diffusers' own `from_single_file` reads these files back equal (test_controlnet_convert), which
  checks this inverse independently of our forward mapping;
- the original AnimateDiff v3 SparseCtrl `.ckpt` (`to_original_sparsectrl`): diffusers names for the
  encoder copy, motion modules in the original naming, with their `pos_encoder.pe` buffers.

The condition embedding has four widths as in SD1.x (hint convs 0..14: diffusers' single-file
converter names those indices), at tiny sizes.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from convert.ldm import unet_key_to_ldm
from convert.motion import diffusers_key_to_original
from tests.convert.ldm_fixtures import randomize

CONTROLNET_SMALL = dict(
    in_channels=4, conditioning_channels=3, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), layers_per_block=1, cross_attention_dim=32,
    attention_head_dim=2, norm_num_groups=8, conditioning_embedding_out_channels=(8, 8, 16, 16))
# a second layout: two layers per block, attention at the other level, linear projections
CONTROLNET_WIDE = dict(
    CONTROLNET_SMALL, block_out_channels=(32, 32, 64), layers_per_block=2, use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"))
CONTROLNETS = {"small": CONTROLNET_SMALL, "wide": CONTROLNET_WIDE}
SPARSECTRL_RGB = dict(
    in_channels=4, conditioning_channels=4, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), layers_per_block=1, cross_attention_dim=32,
    attention_head_dim=2, norm_num_groups=8, motion_num_attention_heads=2, motion_max_seq_length=32,
    use_simplified_condition_embedding=True)
SPARSECTRL_SCRIBBLE = dict(SPARSECTRL_RGB, conditioning_channels=3, use_simplified_condition_embedding=False,
                           conditioning_embedding_out_channels=(8, 16))
# a third layout: three levels, linear projections, two temporal transformer blocks per motion module
SPARSECTRL_DEEP = dict(SPARSECTRL_SCRIBBLE, block_out_channels=(16, 32, 32), layers_per_block=2,
                       down_block_types=("DownBlockMotion", "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion"),
                       use_linear_projection=True, conditioning_embedding_out_channels=(4, 8, 8),
                       temporal_transformer_layers_per_block=2)
SPARSECTRLS = {"rgb": SPARSECTRL_RGB, "scribble": SPARSECTRL_SCRIBBLE, "deep": SPARSECTRL_DEEP}
# what single files cannot show (`load_controlnet(overrides=...)`), for the tiny configs above
HIDDEN = {"norm_num_groups": 8, "attention_head_dim": 2}


def controlnet(variant: str = "small", seed: int = 0):
    from diffusers import ControlNetModel
    return randomize(ControlNetModel(**CONTROLNETS[variant]), seed)


def sparsectrl(variant: str = "rgb", seed: int = 0):
    from diffusers import SparseControlNetModel
    return randomize(SparseControlNetModel(**SPARSECTRLS[variant]), seed)


def state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_ldm(sd: dict[str, np.ndarray], layers_per_block: int, prefix: str = "control_model.") -> dict[str, np.ndarray]:
    """A diffusers ControlNetModel state dict in the LDM (cldm) naming."""
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "controlnet_cond_embedding":
            index = {"conv_in": 0, "conv_out": 2 * n_blocks + 2}.get(parts[1])
            name = f"input_hint_block.{2 * int(parts[2]) + 2 if index is None else index}.{parts[-1]}"
        elif parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif parts[0] == "controlnet_mid_block":
            name = f"middle_block_out.0.{parts[1]}"
        else:
            name = unet_key_to_ldm(k, layers_per_block, ())
        out[prefix + name] = v
    return out


def to_original_sparsectrl(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A diffusers SparseControlNetModel state dict as the original v3 `.ckpt` holds it: motion
    modules in the original naming, the position encoding at `attention_blocks.0.pos_encoder.pe`."""
    out = {}
    for k, v in sd.items():
        if ".motion_modules." not in k:
            out[k] = v
        elif k.endswith(".pos_embed.pe"):
            block = k[: -len("pos_embed.pe")]
            out[diffusers_key_to_original(block + "attn1.to_q.weight").replace("to_q.weight", "pos_encoder.pe")] = v
        else:
            out[diffusers_key_to_original(k)] = v
    return out


def save_torch(sd: dict[str, np.ndarray], path: str, wrapper: str | None = None) -> str:
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    torch.save({wrapper: tensors} if wrapper else tensors, path)
    return path


def save_safetensors(sd: dict[str, np.ndarray], path: str) -> str:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
    return path


def save_folder(model: torch.nn.Module, folder: str) -> str:
    model.save_pretrained(folder)
    assert os.path.isfile(os.path.join(folder, "config.json"))
    return folder
