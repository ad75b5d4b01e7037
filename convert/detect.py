"""What a checkpoint is, from its key names and a few shapes: kind, model family, motion-module version.

All functions take the keys and a `shape(key)` function, so they run on a lazy `StateDict` without
reading tensor data. `describe(path)` opens a file and reports everything (used by `convert inspect`).
"""
from __future__ import annotations

import collections
import json
import os
from typing import Callable, Iterable

import numpy as np

from convert.io import CheckpointError, ShardedStateDict, examples, open_state_dict

ShapeFn = Callable[[str], tuple[int, ...]]

KINDS = ("flax", "ldm", "diffusers_unet", "diffusers_vae", "clip_text", "motion_module", "motion_adapter",
         "motion_lora", "lora_kohya", "lora_peft", "lora_diffusers_old", "controlnet", "sparsectrl", "unknown")
# ControlNets in the LDM ("cldm") layout: `control_model.`-prefixed (or bare) keys of these parts
CONTROLNET_LDM_PREFIX = "control_model."
_CONTROLNET_LDM_PARTS = ("input_hint_block.", "zero_convs.", "middle_block_out.")
_CONTROLNET_PARTS = ("controlnet_cond_embedding.", "controlnet_down_blocks.")  # diffusers' names
# how each control kind is described and which sampler flag takes it
CONTROL_KINDS = {"controlnet": ("a ControlNet", "--controlnet"),
                 "sparsectrl": ("a SparseCtrl encoder (AnimateDiff v3 v3_sd15_sparsectrl_*.ckpt or a diffusers "
                                "SparseControlNetModel)", "--sparsectrl")}


def strip_module_prefix(key: str) -> str:
    """Keys written by the official AnimateDiff trainer (DataParallel) start with `module.`."""
    return key[len("module."):] if key.startswith("module.") else key


def control_kind(keys: Iterable[str]) -> str | None:
    """'sparsectrl', 'controlnet' or None, from the key names (possibly `module.`-prefixed).

    SparseCtrl: diffusers-named encoder keys (both `controlnet_cond_embedding.` and
    `controlnet_down_blocks.`) with motion modules; ControlNet: the same without motion modules, or
    the LDM layout (`input_hint_block.`, `zero_convs.` and `middle_block_out.`, `control_model.`-prefixed
    or bare). A stray key of one part alone does not make a file a ControlNet."""
    keys = [strip_module_prefix(k) for k in keys]
    starts = lambda parts: all(any(k.startswith(p) for k in keys) for p in parts)  # noqa: E731
    if starts(_CONTROLNET_PARTS):
        return "sparsectrl" if any(".motion_modules." in k for k in keys) else "controlnet"
    keys = [k[len(CONTROLNET_LDM_PREFIX):] if k.startswith(CONTROLNET_LDM_PREFIX) else k for k in keys]
    return "controlnet" if starts(_CONTROLNET_LDM_PARTS) else None


def control_layout(keys: Iterable[str]) -> str:
    """How a ControlNet / SparseCtrl file names its keys: "ldm" (cldm: `input_hint_block`, `zero_convs`),
    "original" (the AnimateDiff v3 SparseCtrl `.ckpt`: motion modules with `temporal_transformer`) or
    "diffusers"."""
    keys = [strip_module_prefix(k) for k in keys]
    if not any(k.startswith(_CONTROLNET_PARTS) for k in keys):
        return "ldm"
    return "original" if any(".temporal_transformer." in k for k in keys) else "diffusers"


def refuse_control(keys: Iterable[str], path: str, expected: str) -> None:
    """Raise `CheckpointError` naming the file, what it is and the flag that takes it, when a
    ControlNet or SparseCtrl file is given where `expected` (e.g. "a motion module") is."""
    kind = control_kind(keys)
    if kind is not None:
        what, flag = CONTROL_KINDS[kind]
        raise CheckpointError(f"{path}: this is {what}, not {expected}; pass it with {flag} "
                              "(python -m animatediff_jax.sample), or convert it with `python -m convert controlnet`")


def checkpoint_kind(keys: Iterable[str], metadata: dict | None = None) -> str:
    """One of `KINDS`, from the key names (and `format` metadata for our own Flax files)."""
    if (metadata or {}).get("format") == "flax":
        return "flax"
    keys = [strip_module_prefix(k) for k in keys]
    has = lambda s: any(s in k for k in keys)  # noqa: E731
    starts = lambda s: any(k.startswith(s) for k in keys)  # noqa: E731
    if starts("lora_unet_") or starts("lora_te_") or starts("lora_te1_"):
        return "lora_kohya"
    if has(".lora_A.") or has(".lora_B."):
        return "lora_peft"
    if has("motion_modules.") and has("_lora."):
        return "motion_lora"
    if has("processor.") and has("_lora."):
        return "lora_diffusers_old"
    control = control_kind(keys)
    if control is not None:
        return control
    if has("motion_modules."):
        return "motion_module" if has(".temporal_transformer.") else "motion_adapter"
    if starts("model.diffusion_model.") or starts("first_stage_model.") or starts("cond_stage_model.") \
            or starts("conditioner.embedders."):
        return "ldm"
    if starts("down_blocks.") and has("time_embedding."):
        return "diffusers_unet"
    if starts("encoder.down_blocks.") or starts("decoder.up_blocks."):
        return "diffusers_vae"
    if has("embeddings.token_embedding.") and has("encoder.layers."):
        return "clip_text"
    return "unknown"


def model_family(keys: Iterable[str], shape: ShapeFn) -> str:
    """'sd1', 'sd2', 'sdxl' or 'unknown' for an LDM file or a diffusers UNet / text-encoder state dict."""
    keys = list(keys)
    keyset = set(keys)
    if any(k.startswith("conditioner.embedders.") for k in keys) or any(
            k.startswith(("model.diffusion_model.label_emb.", "add_embedding.")) for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"  # OpenCLIP ViT-H text encoder
    cross = [k for k in keys if k.endswith("attn2.to_k.weight")]
    if cross:
        dim = shape(cross[0])[-1]
        return "sd1" if dim == 768 else "sd2" if dim == 1024 else "sdxl" if dim == 2048 else "sd1"
    tok = next((k for k in keys if k.endswith("embeddings.token_embedding.weight")), None)
    if tok is not None:
        return "sd1" if shape(tok)[-1] != 1024 else "sd2"
    if any(k.startswith(("first_stage_model.", "encoder.down_blocks.", "encoder.down.")) for k in keyset):
        return "sd1"  # a VAE alone: the SD1.x and SD2 VAEs are the same network
    return "unknown"


def cross_attention_dim(keys: Iterable[str], shape: ShapeFn) -> int | None:
    k = next((k for k in keys if k.endswith("attn2.to_k.weight")), None)
    return None if k is None else int(shape(k)[-1])


def require_sd1(keys: Iterable[str], shape: ShapeFn, path: str) -> None:
    """Raise a clear error for a Stable Diffusion 2.x or SDXL checkpoint, or a ControlNet / SparseCtrl
    file (without an SD UNet of its own), given where an SD1.x model is expected."""
    keys = list(keys)
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        refuse_control(keys, path, "a Stable Diffusion model")
    family = model_family(keys, shape)
    if family == "sd1":
        return
    why = {
        "sdxl": "it is a Stable Diffusion XL checkpoint (conditioner.embedders.* / label_emb / add_embedding keys)",
        "sd2": "it is a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder cond_stage_model.model.* "
               f"or 1024-dim cross-attention, found {cross_attention_dim(keys, shape)})",
        "unknown": f"no Stable Diffusion network was recognised in it (keys: {examples(keys, 3)})",
    }[family]
    raise CheckpointError(f"{path}: not a Stable Diffusion 1.x model: {why}. AnimateDiff motion modules "
                          "here are for SD1.x (768-dim CLIP ViT-L/14 cross-attention).")


def require_sd1_controlnet(keys: Iterable[str], shape: ShapeFn, path: str) -> None:
    """Raise a clear error for an SDXL or SD2.x ControlNet / SparseCtrl. `keys`: diffusers-named, or
    LDM-named without the `control_model.` prefix. SDXL: a `label_emb` / `add_embedding` (the
    size-and-crop conditioning), 2048-dim cross-attention or several transformer blocks per spatial
    attention (SparseCtrl's motion modules may have several);
    SD2.x: 1024-dim cross-attention. Other widths pass, as in `model_family` (miniature test models)."""
    keys = list(keys)
    dim = cross_attention_dim(keys, shape)
    if dim == 2048 or any(k.startswith(("label_emb.", "add_embedding.")) or
                          (".transformer_blocks.1." in k and ".motion_modules." not in k) for k in keys):
        raise CheckpointError(f"{path}: SDXL ControlNets are not supported (SD1.x only): it has "
                              + ("2048-dim cross-attention" if dim == 2048 else
                                 "SDXL's size conditioning (label_emb / add_embedding) or deep transformer blocks"))
    if dim == 1024:
        raise CheckpointError(f"{path}: SD2.x ControlNets are not supported (SD1.x only): it has 1024-dim "
                              "(OpenCLIP) cross-attention, SD1.x has 768")


# ----------------------------------------------------------------------------- motion modules

MOTION_PE = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
MOTION_V2_MID = "mid_block.motion_modules.0.temporal_transformer.norm.bias"
MOTION_SDXL_PROBE = "up_blocks.2.motion_modules.0.temporal_transformer.norm.weight"


def version_from_layout(has_mid_block: bool, pe_length: int | None) -> str | None:
    """'v1', 'v2' or 'v3' as the reference loaders decide from a module's layout: a mid-block module
    -> v2; position-encoding length 24 -> v1; else v3. None without a position encoding (the original
    trainer's saves, AnimateLCM-style files): the layout alone does not show the version there."""
    if pe_length is None:
        return None
    return "v2" if has_mid_block else "v1" if pe_length == 24 else "v3"


def motion_version(keys: Iterable[str], shape: ShapeFn, path: str = "<motion module>") -> str | None:
    """`version_from_layout` of an original-format motion module (keys possibly `module.`-prefixed):
    None when it has no `pos_encoder.pe`. An SDXL module (320 channels at up_blocks.2) or a file
    without motion-module keys is refused (`CheckpointError`)."""
    raw = {strip_module_prefix(k): k for k in keys}
    if MOTION_SDXL_PROBE in raw and shape(raw[MOTION_SDXL_PROBE])[-1] == 320:
        raise CheckpointError(f"{path}: an SDXL motion module (320 channels at up_blocks.2); only SD1.x "
                              "motion modules are supported")
    if not any(".motion_modules." in k or k.startswith("motion_modules.") for k in raw):
        raise CheckpointError(f"{path}: not a motion module (keys: {examples(list(raw), 3)})")
    pe_length = int(shape(raw[MOTION_PE])[1]) if MOTION_PE in raw else None
    return version_from_layout(MOTION_V2_MID in raw, pe_length)


# ----------------------------------------------------------------------------- one file

def describe(path: str) -> dict:
    """Format, kind, family, version, parameter count and dtypes of one checkpoint file."""
    with open_state_dict(path) as sd:
        keys = list(sd)
        sharded = isinstance(sd, ShardedStateDict)
        ext = os.path.splitext(path[: -len(".index.json")] if sharded else path)[1].lower().lstrip(".")
        kind = checkpoint_kind(keys, sd.metadata)
        fmt = "safetensors" if ext == "safetensors" else f"pickle ({ext})"
        info = {"file": path, "format": f"{fmt}, {len(sd.shard_paths)} shards" if sharded else fmt,
                "kind": kind, "tensors": len(keys),
                "parameters": int(sum(int(np.prod(sd.shape(k), dtype=np.int64)) for k in keys)),
                "dtypes": dict(collections.Counter(str(sd.dtype(k)) for k in keys)),
                "bytes": sum(map(os.path.getsize, sd.shard_paths)) if sharded else os.path.getsize(path)}
        if kind in ("ldm", "diffusers_unet", "clip_text"):
            info["family"] = model_family(keys, sd.shape)
        if kind == "ldm":
            info["networks"] = sorted({n for n, p in (("unet", "model.diffusion_model."), ("vae", "first_stage_model."),
                                                      ("text_encoder", "cond_stage_model."))
                                       if any(k.startswith(p) for k in keys)})
            info["ema"] = any(k.startswith("model_ema.diffusion_model") for k in keys)
        if kind == "motion_module":
            info["version"] = motion_version(keys, sd.shape, path) or \
                "not stored (no pos_encoder.pe): pass it (convert motion --version, sample --motion-version)"
        if kind in CONTROL_KINDS:
            info["layout"] = control_layout(keys)
        if kind == "flax":
            info.update({k: sd.metadata[k] for k in ("config_class", "source", "dtype") if k in sd.metadata})
            if "motion" in sd.metadata:  # our converted motion modules state their version
                info["version"] = json.loads(sd.metadata["motion"]).get("version") or "not stored"
    return info
