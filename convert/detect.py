"""What a checkpoint is, from its key names and a few shapes: kind, model family, motion-module version.

All functions take the keys and a `shape(key)` function, so they run on a lazy `StateDict` without
reading tensor data. `describe(path)` opens a file and reports everything; `describe_path(path)` does
so for a file or for each weights file of a model folder in any layout the loaders read
(`folder_layout`). Both are what `convert inspect` prints.
"""
from __future__ import annotations

import collections
import json
import os
import re
from typing import Callable, Iterable, Mapping

import numpy as np

from animatediff_jax.params import flax_path_to_torch
from convert.io import CheckpointError, ShardedStateDict, examples, open_state_dict
from convert.naming import flax_tensor_to_torch
from animatediff_jax.hub_ids import is_hub_id
from convert.sources import HUB_PATTERNS, SD_COMPONENTS, resolve_source, weights_file, weights_variant

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


# other tools' files given where an SD model is expected: what they are, the sampler flag that takes them
# and the `python -m convert` command for them
_CONVERT_MOTION = "convert it with `python -m convert motion`"
OTHER_KINDS = {"motion_module": ("an AnimateDiff motion module", "--motion-module", _CONVERT_MOTION),
               "motion_adapter": ("a diffusers MotionAdapter (a motion module)", "--motion-module", _CONVERT_MOTION),
               "motion_lora": ("a motion LoRA", "--motion-lora",
                               "fuse it into a motion module with `python -m convert motion-lora`"),
               **dict.fromkeys(("lora_kohya", "lora_peft", "lora_diffusers_old"),
                               ("a LoRA", "--lora", "apply it to a converted base with `python -m convert lora`"))}


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


def _cross_keys(keys: Iterable[str]) -> list[str]:
    """The image network's cross-attention key projections (a motion module's `attn2` is temporal)."""
    return [k for k in keys if k.endswith("attn2.to_k.weight") and ".motion_modules." not in k]


def width_family(dim: int) -> str:
    """The family of a cross-attention input width: 768 SD1.x (CLIP ViT-L), 1024 SD2 (OpenCLIP ViT-H),
    2048 SDXL (both its text encoders); other widths (miniature test models) count as SD1.x."""
    return {1024: "sd2", 2048: "sdxl"}.get(dim, "sd1")


def model_family(keys: Iterable[str], shape: ShapeFn) -> str:
    """'sd1', 'sd2', 'sdxl' or 'unknown' for an LDM file or a diffusers UNet / text-encoder state dict."""
    keys = list(keys)
    keyset = set(keys)
    if any(k.startswith("conditioner.embedders.") for k in keys) or any(
            k.startswith(("model.diffusion_model.label_emb.", "add_embedding.")) for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"  # OpenCLIP ViT-H text encoder
    cross = _cross_keys(keys)
    if cross:
        return width_family(shape(cross[0])[-1])
    tok = next((k for k in keys if k.endswith("embeddings.token_embedding.weight")), None)
    if tok is not None:
        return "sd1" if shape(tok)[-1] != 1024 else "sd2"
    if any(k.startswith(("first_stage_model.", "encoder.down_blocks.", "encoder.down.")) for k in keyset):
        return "sd1"  # a VAE alone: the SD1.x and SD2 VAEs are the same network
    return "unknown"


# a LoRA's down (A) matrix of a cross-attention key projection, (rank, width): kohya (diffusers or LDM
# paths), PEFT, and the older `processor.to_k_lora` keys; and of a CLIP text layer's query projection
_LORA_CROSS = re.compile(r"attn2[._](?:to_k[._]lora[._]down|to_k[._]lora_A|processor[._]to_k_lora[._]down)[._]")
_LORA_TEXT = re.compile(r"self_attn[._]q_proj[._](?:lora[._]down|lora_A)[._]")
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2", "sdxl": "SDXL"}  # how messages name each family
_LORA_SDXL_PREFIXES = ("lora_te1_", "lora_te2_", "text_encoder_2.")  # SDXL's two text encoders


def lora_family(keys: Iterable[str], shape: ShapeFn) -> str | None:
    """The family a (kohya, PEFT or processor-style) LoRA adapts: 'sdxl' when it has SDXL's second text
    encoder; else the width of its cross-attention key projections (`width_family`); else its text
    encoder's width (1024: SD2's OpenCLIP, else SD1.x's CLIP); None when it adapts none of these
    (convolutions only, say)."""
    keys = [strip_module_prefix(k) for k in keys]
    if any(k.startswith(_LORA_SDXL_PREFIXES) for k in keys):
        return "sdxl"
    cross = next((k for k in keys if _LORA_CROSS.search(k)), None)
    if cross is not None:
        return width_family(shape(cross)[-1])
    text = next((k for k in keys if _LORA_TEXT.search(k)), None)
    if text is not None:
        return "sd2" if shape(text)[-1] == 1024 else "sd1"
    return None


def motion_family(keys: Iterable[str], shape: ShapeFn) -> str:
    """'sdxl' for a motion module (or MotionLoRA) with 320 channels at up_blocks.2 -- SDXL's UNet has
    three blocks (1280, 640, 320 channels going up), SD1.x's four (1280, 1280, 640, 320) -- else 'sd1',
    which every other AnimateDiff module is for. Keys in the original or MotionAdapter naming, possibly
    `module.`- or (diffusers MotionLoRAs) `unet.`-prefixed."""
    for key in keys:
        name = strip_module_prefix(key).removeprefix("unet.")
        if name.startswith("up_blocks.2.motion_modules.") and name.endswith(("norm.weight", "_lora.down.weight")):
            return "sdxl" if shape(key)[-1] == 320 else "sd1"
    return "sd1"


def flax_as_torch(keys: Iterable[str], shape: ShapeFn) -> tuple[list[str], ShapeFn]:
    """The PyTorch names and shapes of a Flax params file's `/`-joined keys (kernels transposed back:
    Linear (in, out) -> (out, in)), which the rules here read."""
    names = {flax_path_to_torch(tuple(k.split("/"))): k for k in keys}

    def torch_shape(name: str) -> tuple[int, ...]:
        path = tuple(names[name].split("/"))
        return flax_tensor_to_torch(path, np.broadcast_to(np.int8(0), shape(names[name]))).shape
    return list(names), torch_shape


MOTION_KINDS = ("motion_module", "motion_adapter", "motion_lora")
LORA_KINDS = ("lora_kohya", "lora_peft", "lora_diffusers_old")


def file_family(kind: str, keys: Iterable[str], shape: ShapeFn) -> str | None:
    """'sd1', 'sd2' or 'sdxl': the family a file of `kind` (`checkpoint_kind`) is for, None where its
    keys do not show it. A Flax params file is judged as the network its PyTorch names make."""
    if kind == "flax":
        keys, shape = flax_as_torch(keys, shape)
        kind = checkpoint_kind(keys)
    if kind in MOTION_KINDS:
        return motion_family(keys, shape)
    if kind in LORA_KINDS:
        return lora_family(keys, shape)
    family = "unknown" if kind == "unknown" else model_family(keys, shape)
    return None if family == "unknown" else family


def cross_attention_dim(keys: Iterable[str], shape: ShapeFn) -> int | None:
    cross = _cross_keys(keys)
    return int(shape(cross[0])[-1]) if cross else None


def require_sd1(keys: Iterable[str], shape: ShapeFn, path: str) -> None:
    """Raise a clear error for a Stable Diffusion 2.x or SDXL checkpoint, or a motion module, LoRA,
    ControlNet or SparseCtrl file (without an SD UNet of its own), given where an SD1.x model is
    expected: what it is, the sampler flag and the convert command for it."""
    keys = list(keys)
    kind = checkpoint_kind(keys)
    if kind in OTHER_KINDS:
        what, flag, use = OTHER_KINDS[kind]
        raise CheckpointError(f"{path}: this is {what}, not a Stable Diffusion model; pass it with {flag} "
                              f"(python -m animatediff_jax.sample), or {use}")
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

# where the version shows, in the original naming and in the MotionAdapter's (diffusers)
MOTION_PE = ("down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe",
             "down_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe")
MOTION_V2_MID = ("mid_block.motion_modules.0.temporal_transformer.norm.bias", "mid_block.motion_modules.0.norm.bias")
ADAPTER_MAX_SEQ_LENGTH = 32  # a diffusers MotionAdapter config's default motion_max_seq_length


def version_from_layout(has_mid_block: bool, pe_length: int | None) -> str | None:
    """'v1', 'v2' or 'v3' as the reference loaders decide from a module's layout: a mid-block module
    -> v2; position-encoding length 24 -> v1; else v3. None without a position encoding (the original
    trainer's saves, AnimateLCM-style files): the layout alone does not show the version there."""
    if pe_length is None:
        return None
    return "v2" if has_mid_block else "v1" if pe_length == 24 else "v3"


def adapter_version(config: Mapping) -> str | None:
    """The version a diffusers MotionAdapter's config.json states (`version_from_layout` of its
    `use_motion_mid_block` and `motion_max_seq_length`, by diffusers' defaults a mid block and 32)."""
    return version_from_layout(config.get("use_motion_mid_block", True),
                               config.get("motion_max_seq_length", ADAPTER_MAX_SEQ_LENGTH))


def motion_version(keys: Iterable[str], shape: ShapeFn, path: str = "<motion module>") -> str | None:
    """`version_from_layout` of a motion module, original or MotionAdapter-named (keys possibly
    `module.`-prefixed): None when it has no position encoding (`pos_encoder.pe` / `pos_embed.pe`).
    An SDXL module (`motion_family`) or a file without motion-module keys is refused (`CheckpointError`),
    one with original-named keys out of the original's layout as `convert motion` refuses it
    (`convert.motion.refuse_misplaced`: `MotionModuleError`)."""
    from convert.motion import refuse_misplaced  # lazy: convert.motion imports this module
    raw = {strip_module_prefix(k): k for k in keys}
    if motion_family(raw.values(), shape) == "sdxl":
        raise CheckpointError(f"{path}: an SDXL motion module (320 channels at up_blocks.2); only SD1.x "
                              "motion modules are supported")
    if not any(".motion_modules." in k or k.startswith("motion_modules.") for k in raw):
        raise CheckpointError(f"{path}: not a motion module (keys: {examples(list(raw), 3)})")
    refuse_misplaced(raw, path)
    pe = next((raw[k] for k in MOTION_PE if k in raw), None)
    return version_from_layout(any(k in raw for k in MOTION_V2_MID), None if pe is None else int(shape(pe)[1]))


# ----------------------------------------------------------------------------- one file

_VERSION_NOT_STORED = "not stored (no {}): pass it (convert motion --version, sample --motion-version)"
_PE_NAMES = {"motion_module": "pos_encoder.pe", "motion_adapter": "pos_embed.pe"}


def describe(path: str, config: Mapping | None = None) -> dict:
    """Format, kind, family, version, parameter count and dtypes of one checkpoint file (and, for an
    output of `convert merge`, its `merge` note). `config`: the config.json of the diffusers folder
    holding it, if any (a MotionAdapter's version is read from it, as the loader does)."""
    with open_state_dict(path) as sd:
        keys = list(sd)
        sharded = isinstance(sd, ShardedStateDict)
        ext = os.path.splitext(sd.shard_paths[0] if sharded else path)[1].lower().lstrip(".")
        kind = checkpoint_kind(keys, sd.metadata)
        fmt = "safetensors" if ext == "safetensors" else f"pickle ({ext})"
        info = {"file": path, "format": f"{fmt}, {len(sd.shard_paths)} shards" if sharded else fmt,
                "kind": kind, "tensors": len(keys),
                "parameters": int(sum(int(np.prod(sd.shape(k), dtype=np.int64)) for k in keys)),
                "dtypes": dict(collections.Counter(str(sd.dtype(k)) for k in keys)),
                "bytes": sum(map(os.path.getsize, sd.shard_paths)) if sharded else os.path.getsize(path)}
        family = file_family(kind, keys, sd.shape)
        if family is not None:
            info["family"] = family
        if kind == "ldm":
            info["networks"] = sorted({n for n, p in (("unet", "model.diffusion_model."), ("vae", "first_stage_model."),
                                                      ("text_encoder", "cond_stage_model."))
                                       if any(k.startswith(p) for k in keys)})
            info["ema"] = any(k.startswith("model_ema.diffusion_model") for k in keys)
        if kind in _PE_NAMES and family == "sd1":  # v1/v2/v3 name SD1.x modules
            version = adapter_version(config) if kind == "motion_adapter" and config is not None else \
                motion_version(keys, sd.shape, path)
            info["version"] = version or _VERSION_NOT_STORED.format(_PE_NAMES[kind])
        if kind in CONTROL_KINDS:
            info["layout"] = control_layout(keys)
        if kind == "flax":
            info.update({k: sd.metadata[k] for k in ("config_class", "source", "dtype") if k in sd.metadata})
            if "motion" in sd.metadata:  # our converted motion modules state their version
                info["version"] = json.loads(sd.metadata["motion"]).get("version") or "not stored"
        if "merge" in sd.metadata:  # what `convert merge` made it from
            info["merge"] = sd.metadata["merge"]
    return info


# ----------------------------------------------------------------------------- folders

def _json_object(path: str) -> dict:
    """A folder's config file, which must be a JSON object (CheckpointError naming it otherwise)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable config ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a config (a JSON object), found {type(value).__name__}")
    return value


def folder_layout(path: str, variant: str | None = None) -> tuple[str, list[str], dict | None]:
    """(what a model folder is, its weights files, its config.json if a diffusers model folder), for
    every folder the loaders read; a diffusers folder's weights as its loader finds them
    (`convert.sources.weights_file`: whole or sharded, plain or `variant`, else its one variant):

    - written by `convert base` / `convert lora`: {unet,vae,text_encoder}.safetensors (those present);
    - a diffusers SD folder: unet/, vae/, text_encoder/ (`--base`, `convert base`);
    - a diffusers model folder: config.json + diffusion_pytorch_model.* -- a MotionAdapter
      (`--motion-module`, also `export-motion --format diffusers`'s output), a ControlNetModel or
      SparseControlNetModel (`--controlnet`, `--sparsectrl`; or a pipeline folder's controlnet/), a UNet
      (`export-unet`'s output);
    - a PEFT LoRA adapter (`save_pretrained`: adapter_config.json + adapter_model.*; `--lora`), or
      another LoRA folder (`convert.lora.LORA_FOLDER_WEIGHTS`: diffusers' pytorch_lora_weights.*, a
      hub MotionLoRA repo's diffusion_pytorch_model.* without config.json).
    CheckpointError naming the folder for any other."""
    from convert.lora import LORA_FOLDER_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, lora_weights_file  # lazy: a cycle
    converted = [os.path.join(path, f"{n}.safetensors") for n in SD_COMPONENTS]
    if any(os.path.isfile(f) for f in converted):
        return "converted base folder (convert base)", [f for f in converted if os.path.isfile(f)], None
    if os.path.isdir(os.path.join(path, "unet")):
        return "diffusers SD folder", [weights_file(os.path.join(path, n), stems, variant)
                                       for n, stems in SD_COMPONENTS.items()], None
    for folder in (path, os.path.join(path, "controlnet")):
        if os.path.isfile(os.path.join(folder, "config.json")):
            config = _json_object(os.path.join(folder, "config.json"))
            name = config.get("_class_name")
            return (f"diffusers {name if isinstance(name, str) else 'model'} folder",
                    [weights_file(folder, variant=variant)], config)
    if any(os.path.isfile(os.path.join(path, n)) for n in (PEFT_CONFIG, *PEFT_WEIGHTS)):
        return "PEFT LoRA adapter folder", [lora_weights_file(path)], None
    if any(os.path.isfile(os.path.join(path, n)) for n in LORA_FOLDER_WEIGHTS):
        return "LoRA folder", [lora_weights_file(path)], None
    raise CheckpointError(
        f"{path}: a folder that is not a model folder (none of: one written by `convert base`; a diffusers SD "
        "folder with unet/, vae/, text_encoder/; a diffusers model folder with config.json and "
        "diffusion_pytorch_model.* (MotionAdapter, ControlNet, SparseCtrl); a PEFT LoRA adapter with "
        f"{PEFT_CONFIG} and adapter_model.*, or a folder holding one of {', '.join(LORA_FOLDER_WEIGHTS[2:])}); "
        "give its weights files")


def read_variants(infos: list[dict]) -> frozenset:
    """The weight variants (None: plain) of the diffusers folders' weights files among `describe_path`'s
    `infos` (`weights_file`'s choices); single files, converted and LoRA folders have none."""
    return frozenset(weights_variant(i["file"]) for i in infos if i.get("folder", "").startswith("diffusers "))


# what a hub id given to `inspect` is downloaded with: any model folder `folder_layout` reads
INSPECT_HUB_PATTERNS = [p for patterns in HUB_PATTERNS.values() for p in patterns]


def describe_path(path: str, variant: str | None = None, revision: str | None = None) -> list[dict]:
    """`describe` of a file, or of each weights file of a model folder (`folder_layout`, `variant`
    choosing among a diffusers folder's weight variants), then naming the folder's layout. A hub id
    ('owner/name', where no such path exists) is its snapshot folder in the Hugging Face cache, found
    (or downloaded, at `revision`) as `convert base` finds it (`convert.sources.resolve_source`);
    CheckpointError, one line, where it cannot be."""
    if not os.path.exists(path) and is_hub_id(path):
        path = resolve_source(path, revision, allow_patterns=INSPECT_HUB_PATTERNS, variant=variant)
    if not os.path.isdir(path):
        return [describe(path)]
    layout, files, config = folder_layout(path, variant)
    return [{"file": f, "folder": layout, **describe(f, config)} for f in files]
