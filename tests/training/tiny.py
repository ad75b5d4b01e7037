"""A tiny training setup shared by the training tests: config overrides and a character-level
CLIP tokenizer folder (vocab.json + merges.txt in CLIP's format, no merges)."""
from __future__ import annotations

import json
import string
from pathlib import Path

TEXT_LENGTH = 32


def write_tokenizer(folder) -> str:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    tokens = letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder)


def overrides(tokenizer_path: str, **extra) -> list[str]:
    """key=value overrides for a run on 8x8 latents (32 px frames through a 3-level VAE), 4 frames."""
    cfg = {
        "tokenizer_path": tokenizer_path,
        "unet_config": {"block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
                        "attention_head_dim": 8, "norm_num_groups": 8, "sample_size": 8,
                        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]},
        "vae_config": {"block_out_channels": [8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
                       "down_block_types": ["DownEncoderBlock2D"] * 3,
                       "up_block_types": ["UpDecoderBlock2D"] * 3, "sample_size": 32},
        "text_encoder_config": {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 1, "num_attention_heads": 2,
                                "max_position_embeddings": TEXT_LENGTH, "eos_token_id": 53,
                                "bos_token_id": 52, "pad_token_id": 53},
        "motion_module_kwargs": {"num_attention_heads": 2, "norm_num_groups": 8, "max_seq_length": 8},
        "train_data": {"sample_size": 32, "sample_n_frames": 4, "num_clips": 64},
        "train_batch_size": 8, "mixed_precision_training": False, "max_train_steps": 3,
        "checkpointing_steps": 2, "log_every_steps": 1, "global_seed": 0,
    }
    cfg.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in cfg.items()]


def write_base(folder) -> str:
    """A diffusers SD1.x folder with tiny random networks (the converter tests' "small" layout, CLIP
    resized to the character tokenizer) and that tokenizer in `tokenizer/`: a real base to train on."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.convert.ldm_fixtures import TEXT_SMALL, build, randomize, save_folder
    unet, vae, _ = build("small")
    text = randomize(CLIPTextModel(CLIPTextConfig(**dict(
        TEXT_SMALL, vocab_size=64, max_position_embeddings=TEXT_LENGTH, bos_token_id=52, eos_token_id=53,
        pad_token_id=53))), 3)
    save_folder(str(folder), unet, vae, text)
    write_tokenizer(Path(folder) / "tokenizer")
    (Path(folder) / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": TEXT_LENGTH}))
    return str(folder)


def base_overrides(base: str, **extra) -> list[str]:
    """key=value overrides for training a v2-style motion module on `write_base`'s model:
    8x8 latents (16 px frames, 2-level VAE: the UNet's sample size), 4 frames, global batch 4, float32."""
    cfg = {
        "pretrained_model_path": base,
        "train_data": {"sample_size": 16, "sample_n_frames": 4, "num_clips": 64},
        "motion_module_kwargs": {"max_seq_length": 8},
        "train_batch_size": 4, "mixed_precision_training": False, "max_train_steps": 3,
        "checkpointing_steps": 2, "log_every_steps": 1, "global_seed": 0,
    }
    cfg.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in cfg.items()]
