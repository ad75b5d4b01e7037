"""Tiny SD1.x-layout networks, random LoRA files in the community formats, and diffusers' fused reference."""
from __future__ import annotations

import copy

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from convert.ldm import unet_key_to_ldm
from convert.naming import state_dict_to_flax

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ATTN_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8, sample_size=8).eval()


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, vocab_size=100, max_position_embeddings=16,
                                        bos_token_id=0, eos_token_id=2, pad_token_id=1)).eval()


def tiny_pipeline(unet, text_encoder) -> StableDiffusionPipeline:
    """Offline StableDiffusionPipeline around the given networks (no tokenizer: LoRA loading needs none)."""
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def flax_params(module) -> dict:
    return state_dict_to_flax({k: v.detach().numpy() for k, v in module.state_dict().items()})


def unet_lora_modules(unet, locon: bool) -> dict[str, torch.Tensor]:
    """{diffusers module name: weight} of the layers a kohya LoRA (LoCon: and convs) trains."""
    out = {}
    for name, mod in unet.named_modules():
        if not hasattr(mod, "weight") or mod.weight is None or "norm" in name.split(".")[-1]:
            continue
        attn = any(name.endswith("." + t) for t in ATTN_TARGETS) or name.endswith(("proj_in", "proj_out"))
        ff = name.endswith(("ff.net.0.proj", "ff.net.2"))
        conv = mod.weight.ndim == 4 and ("resnets" in name or "samplers" in name)
        if attn or ff or (locon and conv):
            out[name] = mod.weight
    return out


def text_lora_modules(text_encoder) -> dict[str, torch.Tensor]:
    return {name: mod.weight for name, mod in text_encoder.named_modules() if name.endswith(TEXT_TARGETS)}


def _pair(weight: torch.Tensor, rank: int, gen: torch.Generator):
    if weight.ndim == 2:
        return torch.randn(weight.shape[0], rank, generator=gen) * 0.1, torch.randn(rank, weight.shape[1], generator=gen) * 0.1
    up = torch.randn(weight.shape[0], rank, 1, 1, generator=gen) * 0.1
    return up, torch.randn(rank, weight.shape[1], *weight.shape[2:], generator=gen) * 0.1


def kohya_state_dict(unet, text_encoder=None, *, rank=4, alpha: float | None = 2.0, ldm=False, locon=True, seed=0):
    """A kohya/A1111 LoRA: `lora_unet_<path>` (diffusers or LDM path) / `lora_te_text_model_<path>`."""
    gen = torch.Generator().manual_seed(seed)
    up_attn = [any(n.startswith(f"up_blocks.{i}.attentions") for n, _ in unet.named_modules())
               for i in range(len(unet.up_blocks))]
    sd = {}
    named = [("lora_unet_", n, w) for n, w in unet_lora_modules(unet, locon).items()]
    if text_encoder is not None:
        named += [("lora_te_text_model_", n, w) for n, w in text_lora_modules(text_encoder).items()]
    for prefix, name, weight in named:
        if ldm and prefix == "lora_unet_":
            name = unet_key_to_ldm(name + ".weight", 2, up_attn)[: -len(".weight")]
        key = prefix + name.replace(".", "_")
        sd[f"{key}.lora_up.weight"], sd[f"{key}.lora_down.weight"] = _pair(weight, rank, gen)
        if alpha is not None:
            sd[f"{key}.alpha"] = torch.tensor(float(alpha))
    return sd


def processor_state_dict(unet, *, rank=4, seed=0, prefix="unet.", only=None):
    """Older diffusers attention-processor LoRA: `<attn>.processor.to_q_lora.down.weight` (no alpha)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, weight in unet_lora_modules(unet, locon=False).items():
        parts = name.split(".")
        target = parts[-2] if parts[-1] == "0" else parts[-1]
        if target not in ("to_q", "to_k", "to_v", "to_out") or (only and not only(name)):
            continue
        attn = ".".join(parts[:-2] if parts[-1] == "0" else parts[:-1])
        up, down = _pair(weight, rank, gen)
        sd[f"{prefix}{attn}.processor.{target}_lora.up.weight"] = up
        sd[f"{prefix}{attn}.processor.{target}_lora.down.weight"] = down
    return sd


def save(sd, path, metadata=None):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)


def diffusers_fused(unet, text_encoder, loras):
    """(unet, text encoder) Flax params after diffusers' load_lora_weights + fuse_lora(lora_scale=scale)
    for each (path, scale) of `loras` in turn."""
    unet, text_encoder = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    pipe = tiny_pipeline(unet, text_encoder)
    for path, scale in loras:
        pipe.load_lora_weights(str(path))
        pipe.fuse_lora(lora_scale=scale)
        pipe.unload_lora_weights()  # fused weights stay; the LoRA layers go
    return flax_params(unet), flax_params(text_encoder)


def numpy_fused(weight: np.ndarray, up: np.ndarray, down: np.ndarray, factor: float) -> np.ndarray:
    """PyTorch-layout W + factor · up @ down (convs flattened over (in, kh, kw))."""
    delta = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
    return weight + factor * delta.reshape(weight.shape)
