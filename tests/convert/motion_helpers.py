"""Tiny random MotionAdapters and the original AnimateDiff file format, written independently of convert/."""
from __future__ import annotations

import math
import re

import torch
from diffusers import MotionAdapter

from convert.naming import state_dict_to_flax

VERSIONS = {  # version -> (max_seq_length, mid block)
    "v1": (24, False),
    "v2": (32, True),
    "v3": (32, False),
}


def random_adapter(version: str = "v2", channels=(32, 64), layers: int = 1, heads: int = 2, groups: int = 8,
                   seed: int = 0) -> MotionAdapter:
    """A MotionAdapter with every weight random (proj_out is zero-initialised by diffusers)."""
    length, mid = VERSIONS[version]
    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=channels, motion_layers_per_block=layers,
                            motion_num_attention_heads=heads, motion_norm_num_groups=groups,
                            motion_max_seq_length=length, use_motion_mid_block=mid)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            base = 1.0 if re.search(r"norm\d?\.weight$", name) else 0.0
            p.copy_(base + 0.2 * torch.randn_like(p))
    return adapter.eval()


def _sinusoid(length: int, channels: int) -> torch.Tensor:
    pos = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
    pe = torch.zeros(1, length, channels)
    pe[0, :, 0::2] = torch.sin(pos * div)
    pe[0, :, 1::2] = torch.cos(pos * div)
    return pe


_TO_ORIGINAL = {"norm1": "norms.0", "norm2": "norms.1", "norm3": "ff_norm",
                "attn1": "attention_blocks.0", "attn2": "attention_blocks.1"}


def original_state_dict(adapter: MotionAdapter) -> dict[str, torch.Tensor]:
    """The adapter's weights under the original AnimateDiff names, with one pos_encoder.pe per attention."""
    length = adapter.config.motion_max_seq_length
    out = {}
    for key, value in adapter.state_dict().items():
        if key.endswith("pos_embed.pe"):
            continue
        head, rest = re.match(r"^(.*?\.motion_modules\.\d+)\.(.*)$", key).groups()
        parts = rest.split(".")
        if parts[0] == "transformer_blocks":
            parts[2] = _TO_ORIGINAL.get(parts[2], parts[2])
        new = f"{head}.temporal_transformer.{'.'.join(parts)}"
        out[new] = value.clone()
        if new.endswith(".to_q.weight"):
            out[new.replace(".to_q.weight", ".pos_encoder.pe")] = _sinusoid(length, value.shape[0])
    return out


def write_original(sd: dict[str, torch.Tensor], path, wrapper: bool = False, module_prefix: bool = False) -> None:
    """Write an original-format file (.ckpt pickle or .safetensors), optionally as the trainer does."""
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save({"state_dict": sd, "global_step": 10} if wrapper else sd, path)


def adapter_flax(adapter: MotionAdapter) -> dict:
    """Expected Flax motion params: the adapter's state dict through the one rename, pos_embed dropped."""
    return state_dict_to_flax({k: v.numpy() for k, v in adapter.state_dict().items()}, skip=[r"pos_embed\.pe$"])
