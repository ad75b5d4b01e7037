"""The miniature world: frame size, domains, and the tiny SD-architecture network configs.

Everything the miniature trains and ships is fixed here, so the build script, the default sampler
and the evaluation agree. The networks are the real SD1.x architectures at toy widths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from animatediff_jax.data import procedural
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig

SIZE = 32          # frame height = width, pixels
FRAMES = 16        # clip length the motion module is trained on
LATENT_SIZE = 8    # SIZE / VAE downsampling (2 levels -> factor 4)
MAX_TOKENS = 16    # text context (captions are <= 12 tokens)


@dataclass(frozen=True)
class Domain:
    """A visual domain of the world: a background style, and the trigger word that asks for it."""
    name: str
    style: str
    trigger: str | None


BASE = Domain("base", "plain", None)
DREAMBOOTH = Domain("dreambooth", "stripes", "sks")
LORA = Domain("lora", "checker", "xyz")
DOMAINS = {d.name: d for d in (BASE, DREAMBOOTH, LORA)}
TRIGGERS = tuple(d.trigger for d in DOMAINS.values() if d.trigger)


def words() -> list[str]:
    """Caption vocabulary (the tokenizer makes each of these one token)."""
    return procedural.vocabulary(TRIGGERS)


VAE = VAEConfig(block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, norm_num_groups=16,
                latent_channels=4, sample_size=SIZE, scaling_factor=1.0)
TEXT = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=MAX_TOKENS)  # vocab/eos ids filled from the tokenizer
UNET = UNetConfig(block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  attention_head_dim=4, cross_attention_dim=64, norm_num_groups=16, sample_size=LATENT_SIZE)
MOTION = MotionConfig(num_attention_heads=4, max_seq_length=24, use_mid_block=True, norm_num_groups=16)


def clips(seed: int, first: int, count: int, style: str = "plain", trigger: str | None = None
          ) -> tuple[np.ndarray, list[str]]:
    """Clips first..first+count-1 of the video dataset `seed`: ((count, FRAMES, SIZE, SIZE, 3) uint8,
    captions such as "a red circle moving left")."""
    out = [procedural.generate_clip(seed, i, FRAMES, SIZE, style=style, trigger=trigger)
           for i in range(first, first + count)]
    return np.stack([v for v, _ in out]), [c for _, c in out]


def moving_clips(seed: int, direction: str, first: int, count: int) -> tuple[np.ndarray, list[str]]:
    """Clips first..first+count-1 of the video dataset `seed`, each moving `direction` (plain
    background; the same form as `clips`): a MotionLoRA's data."""
    specs = [procedural.clip_spec(seed, i, FRAMES, SIZE, direction=direction) for i in range(first, first + count)]
    return np.stack([procedural.render(s) for s in specs]), [procedural.caption(s) for s in specs]


def clip_frames(seed: int, first: int, count: int, domain: Domain = BASE) -> tuple[np.ndarray, list[str]]:
    """One frame of each clip first..first+count-1, drawn on `domain`'s background: ((count, 1, SIZE,
    SIZE, 3) uint8, captions). The base model's data (plain) and the LoRA's (checker). Odd clips are
    captioned in full ("a red circle moving left"), even ones as a still image ("a red circle"), as an
    image model's captions mention motion only sometimes: trained on one form alone, the base drew the
    other's colours at chance (RESULTS.md: base images 38% colour, base + module 78%), and a LoRA
    trained without the motion words lost its domain whenever a prompt had them."""
    videos, captions = [], []
    for i in range(first, first + count):
        spec = procedural.clip_spec(seed, i, FRAMES, SIZE)
        videos.append(procedural.render(spec, domain.style)[i % FRAMES][None])
        captions.append(procedural.caption(spec, motion=bool(i % 2), style=domain.style, trigger=domain.trigger))
    return np.stack(videos), captions


def images(seed: int, first: int, count: int, domain: Domain) -> tuple[np.ndarray, list[str]]:
    """Images first..first+count-1 of a domain ((count, 1, SIZE, SIZE, 3) uint8, captions such as
    "sks, a red circle on stripes background"): the personalization data, no motion anywhere."""
    out = [procedural.generate_image(seed, i, SIZE, style=domain.style, trigger=domain.trigger)
           for i in range(first, first + count)]
    return np.stack([v for v, _ in out])[:, None], [c for _, c in out]
