"""Tiny random-weight configs of the SD1.x / AnimateDiff architecture, for tests, benchmarks and
smoke runs (`AnimateDiffPipeline.random`), with `write_byte_tokenizer` for their byte-level
vocabulary (514 tokens: every byte, every byte + end-of-word, start and end of text)."""
from __future__ import annotations

import json
import os

from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig

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
