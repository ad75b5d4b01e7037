"""LoRA training for the miniature: low-rank factors on the UNet's spatial transformer layers.

    factors = init_factors(unet_params, rank=16, seed=0)       # {"lora": {module: {"down", "up"}}}
    fused = fuse_factors({**unet_params, **factors})           # traceable: W + (alpha/r) up @ down
    save_kohya("lora.safetensors", factors)                    # read back by convert/lora.py

The general machinery lives in `animatediff_jax/training/lora.py` (down Gaussian, up zero). TARGETS
are every spatial transformer block's attn1/attn2 `to_q`, `to_k`, `to_v`, `to_out.0` and its
feed-forward `ff.net.0.proj`, `ff.net.2` (kohya's LoRA covers the same linear layers): with the
attention projections alone, at rank 4, the LoRA underfit its domain (loss 0.102 vs DreamBooth's
0.050) and the motion module barely moved its videos (RESULTS.md). The miniature keeps alpha = rank
(scale 1) and carries its factors inside the params dict under "lora", so its fitting loop can
treat them like any params tree. The file uses kohya's key names, so the sampler fuses it like any
community LoRA (`--lora file:scale`).
"""
from __future__ import annotations

import re

import numpy as np

from animatediff_jax.training import lora as training_lora

TARGETS = re.compile(r"transformer_blocks_\d+/(attn[12]/(to_q|to_k|to_v|to_out_0)|ff/net_0/proj|ff/net_2)/kernel$")


def init_factors(unet_params: dict, rank: int, seed: int) -> dict:
    """{"lora": {"path.of.kernel": {"down": (r, in), "up": (out, r)}}} for every spatial TARGETS kernel."""
    return {"lora": training_lora.init_factors(unet_params, "unet", rank, seed, TARGETS)}


def fuse_factors(params: dict, scale: float = 1.0) -> dict:
    """UNet params with their "lora" entry fused into the target kernels (works under jit)."""
    params = dict(params)
    factors = params.pop("lora")
    return training_lora.fuse(params, factors, scale)


def save_kohya(path: str, factors: dict, dtype=np.float16) -> None:
    """Write trained factors as a kohya-style LoRA `.safetensors` (atomically), alpha = rank."""
    training_lora.save_kohya(path, factors["lora"], dtype=dtype)
