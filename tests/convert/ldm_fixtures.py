"""Tiny random SD1.x networks (diffusers / transformers, PyTorch) and the files the converter tests read.

Configs follow the SD1.5 layout rules that single-file config inference relies on (32 norm groups,
8 UNet heads, CLIP head dim 64) at small sizes. `VARIANTS` holds more than one block layout.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from convert.ldm import diffusers_to_ldm

UNET_SMALL = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32)
# A second layout: two layers per block, attention at the other level, other channel widths.
UNET_WIDE = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
VAE_SMALL = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1, norm_num_groups=32, sample_size=16)
VAE_WIDE = dict(VAE_SMALL, block_out_channels=(32, 32, 64), layers_per_block=2,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
TEXT_SMALL = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=1, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1)
TEXT_WIDE = dict(TEXT_SMALL, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2)
VARIANTS = {"small": (UNET_SMALL, VAE_SMALL, TEXT_SMALL), "wide": (UNET_WIDE, VAE_WIDE, TEXT_WIDE)}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter (diffusers zero-inits some layers, which would hide mistakes):
    weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02²), norm scales ~ 1 + N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(".weight") and "norm" in name.split(".")[-2]:
                p.copy_(1.0 + 0.1 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(0.02 * noise)
    return model.eval()


def build(variant: str = "small", seed: int = 0):
    """(unet, vae, text_encoder) torch models with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    u, v, t = VARIANTS[variant]
    unet = randomize(UNet2DConditionModel(**u), seed)
    vae = randomize(AutoencoderKL(**v), seed + 1)
    text = randomize(CLIPTextModel(CLIPTextConfig(**t)), seed + 2)
    return unet, vae, text


def numpy_sd(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def ldm_state_dict(unet, vae, text) -> dict[str, np.ndarray]:
    """The LDM single-file state dict of three torch models, by the inverse LDM mapping."""
    cfg = unet.config
    return diffusers_to_ldm(
        numpy_sd(unet), numpy_sd(vae), numpy_sd(text), layers_per_block=cfg.layers_per_block,
        up_block_has_attention=[t.startswith("CrossAttn") for t in cfg.up_block_types],
        vae_num_up_blocks=len(vae.config.up_block_types))


def save_folder(path: str, unet, vae, text, safe: bool = True) -> str:
    """A diffusers SD folder (unet/, vae/, text_encoder/, scheduler/) with .safetensors or .bin weights."""
    from diffusers import DDIMScheduler
    unet.save_pretrained(os.path.join(path, "unet"), safe_serialization=safe)
    vae.save_pretrained(os.path.join(path, "vae"), safe_serialization=safe)
    text.save_pretrained(os.path.join(path, "text_encoder"))
    if not safe:  # transformers 5 writes only safetensors; write the .bin the way older versions did
        te = os.path.join(path, "text_encoder")
        sd = {"text_model." + k: v for k, v in text.state_dict().items()}
        torch.save(sd, os.path.join(te, "pytorch_model.bin"))
        os.remove(os.path.join(te, "model.safetensors"))
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        os.path.join(path, "scheduler"))
    return path


def save_single_file(path: str, state_dict: dict[str, np.ndarray], wrap: bool = False) -> str:
    """Write an LDM state dict as .safetensors or .ckpt (optionally under "state_dict", with extras)."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(tensors, path)
    else:
        torch.save({"state_dict": tensors, "global_step": 10, "epoch": 1} if wrap else tensors, path)
    return path
