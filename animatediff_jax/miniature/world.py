"""The miniature world: frame size, domains, and the tiny SD-architecture network configs.

Everything the miniature trains and ships is fixed here, so the build script, the default sampler
and the evaluation agree. The networks are the real SD1.x architectures at toy widths.
"""
from __future__ import annotations

from dataclasses import dataclass

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
UNET = UNetConfig(block_out_channels=(64, 128), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  attention_head_dim=4, cross_attention_dim=64, norm_num_groups=16, sample_size=LATENT_SIZE)
MOTION = MotionConfig(num_attention_heads=4, max_seq_length=24, use_mid_block=True, norm_num_groups=16)
