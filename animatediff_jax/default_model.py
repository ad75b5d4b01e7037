"""The model `python -m animatediff_jax.sample` uses when no weights are given: the miniature.

The one place that decides it. The miniature AnimateDiff (`animatediff_jax/miniature/`, weights
shipped in `animatediff_jax/assets/miniature/`, rebuilt from scratch by `python -m
animatediff_jax.miniature.build`) is a 32x32, 16-frame AnimateDiff trained on a procedural world of
coloured shapes moving in captioned directions: a base text-to-image model, a DreamBooth fine-tune
("sks", striped backgrounds) and a LoRA ("xyz", checkered backgrounds) trained on images only, and a
motion module trained on the world's videos against the frozen base. `default_jobs` lists what the
bare command samples (the base and the DreamBooth model, both with the motion module); every job is
an ordinary `AnimateDiffPipeline.load` of those files. Measured quality: RESULTS.md.

`TINY_*` are random-weight configs of the same architecture for tests and benchmarks
(`AnimateDiffPipeline.random`), with `write_byte_tokenizer` for their byte-level vocabulary.
"""
from __future__ import annotations

import json
import os

from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig

MINIATURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "miniature")
# Sizes and steps of the default jobs (the miniature's training resolution and the original's DDIM steps).
DEFAULT_SAMPLE = dict(width=32, height=32, frames=16, steps=25)


def default_jobs(prompts: list | None = None) -> list[tuple[str, dict, list]]:
    """(name, AnimateDiffPipeline.load kwargs, prompts) of each default job. With `prompts`, one job:
    the miniature base + motion module on those prompts."""
    base = dict(base=os.path.join(MINIATURE, "base"),
                motion_module=os.path.join(MINIATURE, "motion_module_B.safetensors"))
    if prompts:
        return [("miniature base + motion module", base, list(prompts))]
    dreambooth = dict(base, dreambooth=os.path.join(MINIATURE, "dreambooth"))
    return [("miniature base + motion module", base, ["a red circle moving right", "a blue square moving down"]),
            ("miniature DreamBooth (sks) + motion module", dreambooth,
             ["sks, a yellow triangle moving left on stripes background",
              "sks, a green circle moving up on stripes background"])]


TINY_UNET = UNetConfig(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                       attention_head_dim=4, cross_attention_dim=32, norm_num_groups=8, sample_size=8)
TINY_MOTION = MotionConfig(num_attention_heads=4, max_seq_length=32, use_mid_block=True, norm_num_groups=8)
TINY_VAE = VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64)
TINY_TEXT = CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=77, eos_token_id=513,
                           pad_token_id=513, bos_token_id=512)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def write_byte_tokenizer(folder: str) -> str:
    """A CLIP BPE tokenizer over single bytes (no merges; 514 tokens incl. start/end of text) in
    `folder` (vocab.json, merges.txt, tokenizer_config.json), loadable by transformers' CLIPTokenizer."""
    os.makedirs(folder, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
                   "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)
    return folder
