"""Flax motion params -> the formats the community loads: original AnimateDiff files and diffusers folders.

- Original (`.ckpt` via `torch.save`, or `.safetensors`): a flat state dict in the original naming,
  `pos_encoder.pe` written back as the regenerated sinusoid of length `max_seq_length`, so the
  original code's `load_state_dict` (and ComfyUI, and `MotionAdapter.from_single_file`) accept it.
- diffusers `MotionAdapter` folder: `config.json` + `diffusion_pytorch_model.safetensors`.
- MotionLoRA (normalized `{flax kernel path: LoraWeights}`) -> `processor.*_lora` keys, original or
  diffusers naming.

Every file is written to a temporary name and renamed into place; a folder is assembled in a
temporary sibling folder and swapped in whole (`animatediff_jax.outputs`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Mapping

import numpy as np
from safetensors.numpy import save_file

from animatediff_jax.errors import OutputError
from animatediff_jax.models.configs import MotionConfig
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.outputs import atomic_folder, atomic_path
from convert.motion import (GROUPS_METADATA, HEADS_METADATA, check_layout, diffusers_key_to_original, infer_layout,
                            motion_adapter_key_shapes, sinusoid)
from animatediff_jax.params import flax_path_to_torch
from convert.naming import flax_to_state_dict
from convert.sources import DIFFUSERS_WEIGHTS

ORIGINAL_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")


def _adapter_state_dict(params: Mapping, source: str) -> tuple[dict[str, np.ndarray], tuple]:
    """MotionAdapter-named PyTorch state dict of Flax motion params, checked, and its layout."""
    sd = flax_to_state_dict(params)
    shapes = {k: v.shape for k, v in sd.items()}
    layout = infer_layout(shapes, source)
    check_layout(shapes, motion_adapter_key_shapes(*layout), source)
    return sd, layout


def _cast(sd: Mapping[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Each tensor in `dtype`; a value out of its range becomes ±Inf silently, for `_save_tensors`' check
    to name (no numpy warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return {k: np.ascontiguousarray(np.asarray(v, dtype=dtype or np.asarray(v).dtype)) for k, v in sd.items()}


def motion_to_original(params: Mapping, config: MotionConfig, dtype=np.float32) -> dict[str, np.ndarray]:
    """Original-format state dict (numpy) of Flax motion params, position encodings included."""
    sd, _ = _adapter_state_dict(params, "motion params")
    out = {diffusers_key_to_original(k): v for k, v in sd.items()}
    for key, value in sd.items():  # one pe per attention block, [1, L, C]
        if key.endswith(".attn1.to_q.weight") or key.endswith(".attn2.to_q.weight"):
            pe_key = diffusers_key_to_original(key).replace(".to_q.weight", ".pos_encoder.pe")
            out[pe_key] = sinusoid(config.max_seq_length, value.shape[0])
    return _cast(out, dtype)


def adapter_config(params: Mapping, config: MotionConfig) -> dict:
    """diffusers `MotionAdapter` config.json content for these params."""
    sd = flax_to_state_dict(params)
    channels, layers, mid, n_tb = infer_layout({k: v.shape for k, v in sd.items()}, "motion params")
    return {
        "_class_name": "MotionAdapter",
        "block_out_channels": list(channels),
        "motion_layers_per_block": layers,
        "motion_transformer_layers_per_block": n_tb,
        "motion_mid_block_layers_per_block": 1,
        "motion_transformer_layers_per_mid_block": n_tb,
        "motion_num_attention_heads": config.num_attention_heads,
        "motion_norm_num_groups": config.norm_num_groups,
        "motion_max_seq_length": config.max_seq_length,
        "use_motion_mid_block": mid,
        "conv_in_channels": None,
    }


def motion_to_adapter(params: Mapping, config: MotionConfig, dtype=np.float32) -> dict[str, np.ndarray]:
    """MotionAdapter state dict (numpy), with the `pos_embed.pe` buffers diffusers stores."""
    sd, _ = _adapter_state_dict(params, "motion params")
    for key, value in list(sd.items()):
        if key.endswith(".attn1.to_q.weight"):
            sd[key.replace(".attn1.to_q.weight", ".pos_embed.pe")] = sinusoid(config.max_seq_length, value.shape[0])
    return _cast(sd, dtype)


def require_torch(path: str) -> None:
    """OutputError (exit 1, as reading a pickle without torch) when `path` is to be a PyTorch pickle
    (.ckpt/.pt/.pth) and torch, the `torch` extra, is not installed; found without importing it, so
    that commands check before any work."""
    if not path.endswith(".safetensors") and importlib.util.find_spec("torch") is None:
        raise OutputError(f"{path}: writing a PyTorch pickle needs torch (pip install -e \".[torch]\"); "
                          "or write a .safetensors file")


def _save_tensors(path: str, sd: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
                  nonfinite: NonFinite | None = None) -> None:
    """`.safetensors` (safetensors.numpy) or a torch pickle (callers `require_torch` first), chosen by
    suffix; written atomically. `nonfinite`: every tensor passes its check and its `report()` (refuse
    or warn) runs before anything is written."""
    if nonfinite:
        for k, v in sd.items():
            nonfinite.check(k, v)
        nonfinite.report()
    with atomic_path(path) as tmp:
        if path.endswith(".safetensors"):
            save_file(dict(sd), tmp, metadata=dict(metadata) if metadata else None)
        else:
            import torch  # lazy: an optional extra, needed only for .ckpt/.pt/.pth outputs
            torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, tmp)


def pickle_loses(config: MotionConfig) -> str | None:
    """What an original-format PyTorch pickle of a module of `config` cannot record, as a clause naming it
    (its heads and GroupNorm groups, when not the 8 and 32 every loader of such a file assumes); None
    when a loader reads the file right."""
    heads, groups = config.num_attention_heads, config.norm_num_groups
    if (heads, groups) == (8, 32):
        return None
    return (f"a PyTorch pickle stores neither heads nor GroupNorm groups (the original's loaders assume 8 and 32); "
            f"this module has {heads} and {groups}")


def export_original(params: Mapping, config: MotionConfig, path, dtype=np.float32,
                    nonfinite: NonFinite | None = None, warn: bool = True) -> None:
    """Write an original-format motion module (`.ckpt`/`.pt`/`.pth` pickle or `.safetensors`).
    `nonfinite`: see `_save_tensors`. `warn`: a pickle that `pickle_loses` something is written with a
    warning saying how to read it back (False: the caller said so before its work began)."""
    path = os.fspath(path)
    if not path.endswith(ORIGINAL_SUFFIXES):
        raise ValueError(f"{path}: original motion modules are written as {', '.join(ORIGINAL_SUFFIXES)}")
    require_torch(path)  # before any work
    geometry = {HEADS_METADATA: str(config.num_attention_heads), GROUPS_METADATA: str(config.norm_num_groups)}
    _save_tensors(path, motion_to_original(params, config, dtype), geometry, nonfinite)
    lost = None if path.endswith(".safetensors") else pickle_loses(config)
    if warn and lost:
        print(f"warning: {path}: {lost}: sample it with `--motion-heads {config.num_attention_heads} --motion-norm-groups "
              f"{config.norm_num_groups}`, convert it back with `python -m convert motion {path} OUT.safetensors "
              f"--heads {config.num_attention_heads} --norm-groups {config.norm_num_groups}`, "
              "or write a .safetensors (its metadata keeps them)", file=sys.stderr)


def export_adapter(params: Mapping, config: MotionConfig, folder, dtype=np.float32,
                   nonfinite: NonFinite | None = None) -> None:
    """Write a diffusers `MotionAdapter` folder (config.json + diffusion_pytorch_model.safetensors).

    Written as a temporary sibling folder and swapped in whole (an existing folder is replaced only
    once the new one is complete). `nonfinite`: see `_save_tensors`.
    """
    sd = motion_to_adapter(params, config, dtype)
    cfg = adapter_config(params, config)
    with atomic_folder(os.fspath(folder)) as tmp:
        _save_tensors(os.path.join(tmp, DIFFUSERS_WEIGHTS), sd, {"format": "pt"}, nonfinite)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(json.dumps(cfg, indent=2) + "\n")


# ----------------------------------------------------------------------------- MotionLoRA

_LORA_TARGETS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out_0": "to_out"}


def motion_lora_to_original(lora: Mapping, dtype=np.float32, style: str = "original") -> dict[str, np.ndarray]:
    """MotionLoRA state dict from a normalized motion LoRA `{flax kernel path: LoraWeights}`.

    style "original": `down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.
    attention_blocks.0.processor.to_q_lora.down.weight` (the AnimateDiff repo's files); "diffusers":
    `unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight`
    (the hub's diffusers MotionLoRAs, read by `AnimateDiffPipeline.load_lora_weights`). Neither has
    an alpha (W += scale · up @ down), so alpha / rank is folded into `up`.
    """
    if style not in MOTION_LORA_STYLES:
        raise ValueError(f"MotionLoRA style must be one of {MOTION_LORA_STYLES}, got {style!r}")
    out = {}
    for path, w in lora.items():
        if path[-1] != "kernel" or path[-2] not in _LORA_TARGETS or path[-3] not in ("attn1", "attn2"):
            raise ValueError(f"{'/'.join(path)}: MotionLoRA covers only attn1/attn2 to_q/to_k/to_v/to_out")
        module = flax_path_to_torch(path[:-2] + ("weight",))  # ...attn1.weight
        prefix = (diffusers_key_to_original(module) if style == "original" else "unet." + module)[: -len(".weight")]
        name = _LORA_TARGETS[path[-2]]
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by `_save_tensors`' check
            up = np.asarray(w.up, np.float64) * (w.alpha / w.rank)
        out[f"{prefix}.processor.{name}_lora.down.weight"] = np.asarray(w.down)
        out[f"{prefix}.processor.{name}_lora.up.weight"] = up
    return _cast(out, dtype)


MOTION_LORA_STYLES = ("original", "diffusers")


def export_motion_lora(lora: Mapping, path, dtype=np.float32, style: str = "original",
                       nonfinite: NonFinite | None = None) -> None:
    """Write a MotionLoRA (`.ckpt` pickle or `.safetensors`) in the original or diffusers naming.
    `nonfinite`: see `_save_tensors`."""
    path = os.fspath(path)
    if not path.endswith(ORIGINAL_SUFFIXES):
        raise ValueError(f"{path}: MotionLoRAs are written as {', '.join(ORIGINAL_SUFFIXES)}")
    require_torch(path)
    _save_tensors(path, motion_lora_to_original(lora, dtype, style), nonfinite=nonfinite)


# ----------------------------------------------------------------------------- kohya LoRA

def lora_to_kohya(lora: Mapping, dtype=np.float16) -> dict[str, np.ndarray]:
    """kohya / A1111 LoRA state dict from `{flax kernel path: LoraWeights}` of the UNet: keys
    `lora_unet_<diffusers module, dots as _>.lora_down.weight`, `.lora_up.weight` and `.alpha` (the
    LoRA's alpha, so the kohya rule W += scale · alpha/rank · up @ down gives back the same update)."""
    out = {}
    for path, w in lora.items():
        key = "lora_unet_" + flax_path_to_torch(path)[: -len(".weight")].replace(".", "_")
        out[key + ".lora_down.weight"] = np.asarray(w.down)
        out[key + ".lora_up.weight"] = np.asarray(w.up)
        out[key + ".alpha"] = np.asarray(w.alpha)
    return _cast(out, dtype)


def export_kohya_lora(lora: Mapping, path, dtype=np.float16) -> None:
    """Write a kohya-style LoRA `.safetensors` (what A1111, ComfyUI and our `--lora` read), atomically."""
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"{path}: kohya LoRAs are written as .safetensors")
    _save_tensors(path, lora_to_kohya(lora, dtype), {"format": "pt", "ss_network_module": "networks.lora"})
