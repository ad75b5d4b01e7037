"""LoRA training for the miniature: low-rank factors on the UNet's attention projections.

    factors = init_factors(unet_params, rank=4, seed=0)        # {"lora": {module: {"down", "up"}}}
    fused = fuse_factors({**unet_params, **factors})           # traceable: W + (alpha/r) up @ down
    save_kohya("lora.safetensors", factors, rank=4)            # read back by convert/lora.py

Every `to_q`, `to_k`, `to_v`, `to_out.0` of the spatial self- (attn1) and cross-attention (attn2)
gets W += (alpha / rank) · up @ down with alpha = rank, the factors in PyTorch layout (down
(r, in), up (out, r)); `down` starts Gaussian and `up` at zero, so training starts at the base model.
The file uses kohya's key names (`lora_unet_<module with _>.lora_down.weight`, `.lora_up.weight`,
`.alpha`), so the sampler fuses it like any community LoRA (`--lora file:scale`).
"""
from __future__ import annotations

import re

import numpy as np

from animatediff_jax.checkpoint import atomic_path
from convert.naming import flatten, flax_path_to_torch, unflatten

TARGETS = re.compile(r"transformer_blocks_\d+/attn[12]/(to_q|to_k|to_v|to_out_0)/kernel$")


def init_factors(unet_params: dict, rank: int, seed: int) -> dict:
    """{"lora": {"path.of.kernel": {"down": (r, in), "up": (out, r)}}} for every target kernel."""
    rng = np.random.default_rng(seed)
    factors = {}
    for path, kernel in flatten(unet_params).items():
        if TARGETS.search("/".join(path)):
            fan_in, fan_out = np.shape(kernel)
            factors[".".join(path)] = {
                "down": (rng.standard_normal((rank, fan_in)) / np.sqrt(fan_in)).astype(np.float32),
                "up": np.zeros((fan_out, rank), np.float32)}
    if not factors:
        raise ValueError("no attention projection in the UNet params to put LoRA factors on")
    return {"lora": factors}


def fuse_factors(params: dict, scale: float = 1.0) -> dict:
    """UNet params with their "lora" entry fused into the target kernels (works under jit)."""
    params = dict(params)
    factors = params.pop("lora")
    flat = flatten(params)
    for name, f in factors.items():
        path = tuple(name.split("."))
        delta = scale * (f["down"].T @ f["up"].T)  # alpha / rank = 1; (in, out), the Flax kernel layout
        flat[path] = flat[path] + delta.astype(flat[path].dtype)
    return unflatten(flat)


def save_kohya(path: str, factors: dict, dtype=np.float16) -> None:
    """Write trained factors as a kohya-style LoRA `.safetensors` (atomically)."""
    from safetensors.numpy import save_file
    tensors = {}
    for name, f in factors["lora"].items():
        module = flax_path_to_torch(tuple(name.split(".")))[: -len(".weight")]
        key = "lora_unet_" + module.replace(".", "_")
        down, up = np.asarray(f["down"]), np.asarray(f["up"])
        tensors[key + ".lora_down.weight"] = down.astype(dtype)
        tensors[key + ".lora_up.weight"] = up.astype(dtype)
        tensors[key + ".alpha"] = np.asarray(down.shape[0], dtype)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "ss_network_module": "networks.lora"})
