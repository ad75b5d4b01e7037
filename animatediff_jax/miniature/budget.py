"""The miniature build's budgets (steps, batch sizes, widths per stage), stage names and seeds."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from animatediff_jax.miniature import world
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig

STAGES = ("tokenizer", "vae", "text", "base", "dreambooth", "decoder", "lora", "motion", "motion_lora")
# What each stage reads of the earlier stages' files (`shipped.paths` keys, each the name of the stage writing it).
_BASE = ("tokenizer", "vae", "text", "base")
READS = dict(tokenizer=(), vae=(), text=("tokenizer",), base=("tokenizer", "vae", "text"), decoder=_BASE,
             dreambooth=_BASE, lora=_BASE, motion=_BASE, motion_lora=_BASE + ("motion",))
# The folders each stage writes into (`shipped.paths` keys: a file's folder, or the folder itself).
WRITES = dict(tokenizer=("tokenizer",), vae=("vae",), text=("text",), base=("base",), decoder=("vae",),
              dreambooth=("dreambooth",), lora=("lora",), motion=("record",), motion_lora=("motion_lora",))
DTYPE = "float16"  # storage dtype of the shipped weights
SOURCE = "animatediff_jax.miniature.build"
# Dataset seeds (disjoint streams of the procedural world) and training seeds.
SEEDS = dict(vae=0, vae_decoder=5, text=1, text_data=51, base_data=11, base=12, decoder_data=61, decoder=7,
             dreambooth_data=21, dreambooth=22, lora_data=31, lora=32, motion_data=41, motion=42,
             motion_lora_data=71, motion_lora=72)


@dataclass(frozen=True)
class Budget:
    """Steps, batch sizes and network widths of one build."""
    vae_steps: int
    vae_batch: int
    decoder_steps: int
    text_steps: int
    text_batch: int
    text_pool: int  # pre-rendered examples the text encoder's batches are drawn from
    base_steps: int
    denoised_decoder_steps: int  # the decoder on the base's denoised latents (`denoised_decoder.py`)
    dreambooth_steps: int
    lora_steps: int
    image_batch: int
    motion_steps: int
    video_batch: int
    motion_lora_steps: int
    lora_rank: int = 16
    motion_lora_rank: int = 8
    denoised_max_timestep: int = 1000
    schedules: tuple[str, ...] = ("B", "A", "C")
    vae: VAEConfig = world.VAE
    text: CLIPTextConfig = world.TEXT
    unet: UNetConfig = world.UNET
    motion: MotionConfig = world.MOTION
    learning_rates: dict = field(default_factory=lambda: dict(vae=1e-3, base=1e-3, decoder=5e-4, dreambooth=2e-4, lora=1e-3, motion=5e-4,
                                                              motion_lora=1e-3))


BUDGETS = {
    "full": Budget(vae_steps=2000, vae_batch=32, decoder_steps=200, text_steps=600, text_batch=128, text_pool=4096,
                   # base 4000: at 2000 it drew its own plain background in 54% of frames at guidance 1 (README)
                   base_steps=4000, denoised_decoder_steps=500, dreambooth_steps=1000, lora_steps=4000,
                   image_batch=32, motion_steps=12000, video_batch=4, schedules=("B",),  # the shipped module: against the 2000-step base
                   motion_lora_steps=1000,
                   learning_rates=dict(vae=2e-3, base=1e-3, decoder=5e-4, dreambooth=1e-3, lora=2e-3, motion=1e-3,
                                       motion_lora=1e-3)),
    # The schedule ablation (A/B/C at equal budget) is built on request: `--stages motion --schedules
    # A,B,C --motion-steps 4000` (README).
    # CI smoke test: every stage runs end to end at toy widths; the weights are meaningless.
    "smoke": Budget(vae_steps=2, vae_batch=2, decoder_steps=1, text_steps=2, text_batch=4, text_pool=8, base_steps=2, denoised_decoder_steps=1, dreambooth_steps=2, lora_steps=2,
                    image_batch=2,
                    motion_steps=2, video_batch=1, motion_lora_steps=2, lora_rank=2, motion_lora_rank=2, schedules=("B",),
                    vae=dataclasses.replace(world.VAE, block_out_channels=(8, 8), norm_num_groups=4,
                                            down_block_types=("DownEncoderBlock2D",) * 2,
                                            up_block_types=("UpDecoderBlock2D",) * 2),
                    text=dataclasses.replace(world.TEXT, hidden_size=16, intermediate_size=32, num_hidden_layers=1),
                    unet=dataclasses.replace(world.UNET, block_out_channels=(8,), norm_num_groups=4,
                                             down_block_types=("CrossAttnDownBlock2D",),
                                             up_block_types=("CrossAttnUpBlock2D",)),
                    motion=dataclasses.replace(world.MOTION, norm_num_groups=4)),
}
