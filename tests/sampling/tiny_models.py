"""Tiny random SD1.x base (diffusers folder), MotionAdapter and motion files for the sampling tests."""
import os

import numpy as np
import torch

from animatediff_jax.tiny_models import write_byte_tokenizer

UNET = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, attention_head_dim=4,
            cross_attention_dim=32, norm_num_groups=8, sample_size=8, in_channels=4, out_channels=4)
VAE = dict(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4, latent_channels=4,
           sample_size=32)
TEXT = dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, eos_token_id=513, pad_token_id=513, bos_token_id=512)
ADAPTER = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
               motion_norm_num_groups=8, motion_max_seq_length=16, use_motion_mid_block=True)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False,
                 set_alpha_to_one=True, timestep_spacing="leading")


def _randomize(module, seed):
    """Every parameter random (diffusers zero-initialises the motion modules' proj_out)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(p[0].numel(), 1)) ** 0.5
                    if p.ndim > 1 else torch.randn(p.shape, generator=g) * 0.1)
    return module


def diffusers_pipeline(folder: str, adapter_folder: str, seed: int = 0):
    """A diffusers AnimateDiffPipeline with random tiny weights, saved as a folder + adapter folder."""
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet = _randomize(UNet2DConditionModel(**UNET), seed)
    vae = _randomize(AutoencoderKL(**VAE), seed + 1)
    text = _randomize(CLIPTextModel(CLIPTextConfig(**TEXT)), seed + 2)
    adapter = _randomize(MotionAdapter(**ADAPTER), seed + 3)
    tok_dir = write_byte_tokenizer(os.path.join(folder, "_tok"))
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = DDIMScheduler(**SCHEDULER)
    for name, part in dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=scheduler).items():
        part.save_pretrained(os.path.join(folder, name))  # the SD1.x base, without motion modules
    adapter.save_pretrained(adapter_folder)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, motion_adapter=adapter,
                               scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_original_motion_module(adapter_folder: str, path: str, max_seq_length: int | None = None) -> None:
    """The MotionAdapter's weights renamed to the original AnimateDiff layout (+ pos_encoder.pe of
    `max_seq_length` rows, default the adapter's)."""
    from safetensors.numpy import save_file
    from safetensors.torch import load_file
    from convert.motion import diffusers_key_to_original, sinusoid
    sd = load_file(os.path.join(adapter_folder, "diffusion_pytorch_model.safetensors"))
    out = {}
    for k, v in sd.items():
        if k.endswith("pos_embed.pe"):
            continue
        out[diffusers_key_to_original(k)] = v.numpy()
    for k in list(out):
        if k.endswith("attention_blocks.0.to_q.weight") or k.endswith("attention_blocks.1.to_q.weight"):
            c = out[k].shape[0]
            length = max_seq_length or ADAPTER["motion_max_seq_length"]
            out[k.replace("to_q.weight", "pos_encoder.pe")] = sinusoid(length, c)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}, path)


def write_base_folder(folder: str, seed: int = 0) -> str:
    """A tiny SD1.x diffusers folder (unet, vae, text_encoder, tokenizer, scheduler) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    parts = dict(unet=_randomize(UNet2DConditionModel(**UNET), seed),
                 vae=_randomize(AutoencoderKL(**VAE), seed + 1),
                 text_encoder=_randomize(CLIPTextModel(CLIPTextConfig(**TEXT)), seed + 2),
                 tokenizer=CLIPTokenizer.from_pretrained(write_byte_tokenizer(os.path.join(folder, "_tok"))),
                 scheduler=DDIMScheduler(**SCHEDULER))
    for name, part in parts.items():
        part.save_pretrained(os.path.join(folder, name))
    return folder


def write_dreambooth(path: str, seed: int = 10) -> str:
    """A personalized model as the community shares it: one LDM-layout .safetensors (UNet, VAE, CLIP)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.numpy import save_file
    from transformers import CLIPTextConfig, CLIPTextModel
    from convert.ldm import diffusers_to_ldm
    sd = lambda m: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}  # noqa: E731
    unet = _randomize(UNet2DConditionModel(**UNET), seed)
    ldm = diffusers_to_ldm(sd(unet), sd(_randomize(AutoencoderKL(**VAE), seed + 1)),
                           sd(_randomize(CLIPTextModel(CLIPTextConfig(**TEXT)), seed + 2)),
                           layers_per_block=UNET["layers_per_block"],
                           up_block_has_attention=[t.startswith("CrossAttn") for t in UNET["up_block_types"]],
                           vae_num_up_blocks=len(VAE["up_block_types"]))
    save_file({k: np.ascontiguousarray(v) for k, v in ldm.items()}, path)
    return path


def write_kohya_lora(path: str, rank: int = 2, seed: int = 20) -> str:
    """A kohya LoRA on every attention projection of the tiny UNet (diffusers-style names)."""
    from diffusers import UNet2DConditionModel
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    out = {}
    for name, mod in UNet2DConditionModel(**UNET).named_modules():
        if name.endswith(("to_q", "to_k", "to_v")):
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = rng.standard_normal((rank, mod.in_features), np.float32) * 0.1
            out[f"{key}.lora_up.weight"] = rng.standard_normal((mod.out_features, rank), np.float32) * 0.1
            out[f"{key}.alpha"] = np.array(1.0, np.float32)
    save_file(out, path)
    return path


def write_motion_lora(motion_path: str, path: str, rank: int = 2, seed: int = 30) -> str:
    """A MotionLoRA in the original format (`processor.to_q_lora.down.weight`) for a motion-module file."""
    from safetensors.numpy import load_file, save_file
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in load_file(motion_path).items():
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            if k.endswith(f".{proj}.weight") and ".attention_blocks." in k:
                base = k[: -len(f"{proj}.weight")] + "processor." + proj.split(".")[0] + "_lora"
                out[base + ".down.weight"] = rng.standard_normal((rank, v.shape[1]), np.float32) * 0.1
                out[base + ".up.weight"] = rng.standard_normal((v.shape[0], rank), np.float32) * 0.1
    save_file(out, path)
    return path


def write_adapter_folder(folder: str, seed: int = 3) -> str:
    from diffusers import MotionAdapter
    _randomize(MotionAdapter(**ADAPTER), seed).save_pretrained(folder)
    return folder


def write_v3_motion_module(path: str, seed: int = 4) -> str:
    """A motion module in the original v3 layout: no mid-block module, 32-frame position encoding."""
    import tempfile
    from diffusers import MotionAdapter
    with tempfile.TemporaryDirectory() as folder:
        cfg = {**ADAPTER, "use_motion_mid_block": False, "motion_max_seq_length": 32}
        _randomize(MotionAdapter(**cfg), seed).save_pretrained(folder)
        write_original_motion_module(folder, path, max_seq_length=32)
    return path


def domain_adapter_state_dict(rank: int = 2, seed: int = 40) -> dict:
    """A v3 domain adapter as the original ships it: `<attn>.processor.to_{q,k,v,out}_lora.{down,up}.weight`
    on every spatial attention of the image UNet (names of the UNet's modules, no prefix)."""
    from diffusers import UNet2DConditionModel
    rng = np.random.default_rng(seed)
    out = {}
    for name, mod in UNet2DConditionModel(**UNET).named_modules():
        if ".attentions." in name and name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                                                     "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")):
            attn, target = (name[:-len(".to_out.0")], "to_out") if name.endswith("to_out.0") else name.rsplit(".", 1)
            out[f"{attn}.processor.{target}_lora.down.weight"] = \
                rng.standard_normal((rank, mod.in_features)).astype(np.float32) * 0.3
            out[f"{attn}.processor.{target}_lora.up.weight"] = \
                rng.standard_normal((mod.out_features, rank)).astype(np.float32) * 0.3
    return out
