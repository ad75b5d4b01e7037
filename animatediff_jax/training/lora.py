"""LoRA factors on the UNet's attention projections: created, fused (differentiably), written out.

    factors = init_factors(unet_params, "motion", rank=4, seed=0)  # {"a.b.to_q.kernel": {"down", "up"}}
    unet = fuse(unet_params, factors, scale=alpha / rank)          # W + scale · (up @ down), traceable
    save_kohya("lora.safetensors", factors, alpha)                 # spatial LoRA, kohya keys
    export_motion_lora("motion_lora.ckpt", factors, alpha)         # MotionLoRA, original format

Targets: "motion" — every motion module's temporal attention `to_q`, `to_k`, `to_v`, `to_out.0`
(the original AnimateDiff v2 MotionLoRA); "unet" — the same projections of the spatial self- (attn1)
and cross-attention (attn2). Factors are in PyTorch layout, down (r, in) Gaussian N(0, 1/in) and up
(out, r) zero, so a fresh LoRA leaves the model unchanged. Keys are the kernels' Flax paths joined by
"." (Flax names hold no dots), one flat level, so the factors are an ordinary params tree to train.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from animatediff_jax.errors import UsageError
from animatediff_jax.params import flatten, is_motion_path, unflatten
from animatediff_jax.training.config import LORA_TARGETS
from convert.export import export_kohya_lora
from convert.export import export_motion_lora as export_motion_lora_file
from convert.lora import LoraWeights

PROJECTIONS = re.compile(r"transformer_blocks_\d+/attn[12]/(to_q|to_k|to_v|to_out_0)/kernel$")


def target_paths(unet_params: Mapping, targets: str, layers: re.Pattern = PROJECTIONS) -> list[tuple[str, ...]]:
    """Flax kernel paths the LoRA covers: the kernels whose "/"-joined path `layers` finds (by default
    the attention projections), of the motion modules ("motion") or of the spatial layers ("unet")."""
    if targets not in LORA_TARGETS:
        raise ValueError(f"lora targets must be one of {LORA_TARGETS}, got {targets!r}")
    want_motion = targets == "motion"
    paths = [p for p in flatten(unet_params)
             if layers.search("/".join(p)) and is_motion_path(p) == want_motion]
    if not paths:
        raise UsageError(f"lora.targets: the UNet has no {'motion-module' if want_motion else 'spatial'} layer "
                         f"matching {layers.pattern!r} to put LoRA factors on")
    return paths


def init_factors(unet_params: Mapping, targets: str, rank: int, seed: int, layers: re.Pattern = PROJECTIONS) -> dict:
    """{"path.of.kernel": {"down": (r, in), "up": (out, r)}} float32 numpy for every target kernel
    (`target_paths`)."""
    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    rng = np.random.default_rng(seed)
    flat = flatten(unet_params)
    factors = {}
    for path in target_paths(unet_params, targets, layers):
        fan_in, fan_out = np.shape(flat[path])
        factors[".".join(path)] = {
            "down": (rng.standard_normal((rank, fan_in)) / np.sqrt(fan_in)).astype(np.float32),
            "up": np.zeros((fan_out, rank), np.float32)}
    return factors


def fuse(unet_params: Mapping, factors: Mapping, scale: float) -> dict:
    """UNet params with W + scale · up @ down at every factor's kernel (jnp: works under jit and grad).

    The sum is formed in the wider of the kernel's and the factors' dtypes (float32 factors on a
    bfloat16 base give float32 kernels); the other leaves are passed through as they are."""
    flat = flatten(unet_params)
    for name, f in factors.items():
        path = tuple(name.split("."))
        if path not in flat:
            raise ValueError(f"LoRA factor {name!r} targets a kernel the UNet does not have")
        kernel = flat[path]
        delta = scale * (jnp.asarray(f["down"]).T @ jnp.asarray(f["up"]).T)  # (in, out), the Flax layout
        dtype = jnp.promote_types(jnp.result_type(kernel), delta.dtype)
        flat[path] = jnp.asarray(kernel, dtype) + delta.astype(dtype)
    return unflatten(flat)


def lora_weights(factors: Mapping, alpha: float | None) -> dict:
    """{flax kernel path: convert.lora.LoraWeights} — the form convert/ reads and writes
    (alpha None: each layer's rank)."""
    return {tuple(name.split(".")): LoraWeights(np.asarray(f["up"]), np.asarray(f["down"]),
                                                float(np.shape(f["down"])[0] if alpha is None else alpha))
            for name, f in factors.items()}


def save_kohya(path: str, factors: Mapping, alpha: float | None = None, dtype=np.float16) -> None:
    """Write factors as a kohya-style LoRA `.safetensors` (`convert.export.export_kohya_lora`);
    alpha None: each layer's rank (scale 1)."""
    export_kohya_lora(lora_weights(factors, alpha), path, dtype=dtype)


def export_motion_lora(path: str, factors: Mapping, alpha: float, dtype=np.float32) -> None:
    """Write motion-module factors as an original AnimateDiff MotionLoRA (`.ckpt` or `.safetensors`;
    the format has no alpha, so alpha / rank is folded into `up`)."""
    paths = [tuple(name.split(".")) for name in factors]
    if not all(is_motion_path(p) for p in paths):
        raise ValueError("a MotionLoRA holds motion-module factors only (lora targets: motion)")
    export_motion_lora_file(lora_weights(factors, alpha), path, dtype=dtype)

