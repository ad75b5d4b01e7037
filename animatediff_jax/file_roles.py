"""Which `sample` flag takes which model file: a wrong file named for what it is, before any work.

Users mix up paths: one of our converted Flax files given to `--dreambooth`, a converted model folder
given to `--motion-module`, an empty or unrelated folder given to `--base`. Each then failed deep in
a loader with a misleading message ("not SD1.x", "no tokenizer"). `check_model_path(path, role, names,
labels)` says what the path is and which flag (or, in a prompt config, which entry key) takes it, or,
for a folder that holds no SD1.x model at all, what was expected there (both `InputError`, exit 1: the
file is of the wrong kind). Other tools' `.safetensors` files are told apart by their keys (a motion LoRA
given as a motion module, a LoRA as a DreamBooth: `convert.detect.checkpoint_kind`; the LoRA flags' own
readers tell a LoRA from a MotionLoRA, in more words); pickles are not
opened here (reading their keys means unpickling them): their loaders check them. Training names its
config keys the same way (`names`, `labels`).
"""
from __future__ import annotations

import json
import os
from typing import Mapping

from animatediff_jax.checkpoint import incomplete_converted_folder, is_flax_file, read_metadata
from animatediff_jax.errors import InputError
from animatediff_jax.loading import FLAGS, is_converted_base
from convert.detect import OTHER_KINDS, checkpoint_kind
from convert.io import open_state_dict

TRAINED_FACTORS = "LoRA factors written by training (lora_factors.safetensors)"
MODEL_ROLES = ("base", "dreambooth")  # an SD1.x model: diffusers folder, converted folder or single file
_NETWORK_NAMES = {"UNetConfig": "UNet", "VAEConfig": "VAE", "CLIPTextConfig": "text encoder"}
EXPECTED_MODEL = ("a diffusers SD1.x folder (unet/, vae/, text_encoder/ with their config.json), a folder written "
                  "by `python -m convert base` (unet.safetensors, vae.safetensors, text_encoder.safetensors) "
                  "or a single .safetensors/.ckpt file")


# other tools' files by `checkpoint_kind`: the roles that take them
KIND_ROLES = {"motion_module": ("motion_module",), "motion_adapter": ("motion_module",),
              "motion_lora": ("motion_loras",), "lora_kohya": ("loras", "domain_adapter"),
              "lora_peft": ("loras", "domain_adapter"), "lora_diffusers_old": ("loras",)}


def _flax_metadata(path: str) -> dict | None:
    """The metadata of one of our Flax params files (format=flax), else None."""
    return read_metadata(path) if is_flax_file(path) else None


def converted_role(path: str) -> tuple[str, tuple[str, ...]] | None:
    """(what it is, the `loading.ModelFiles` roles that take it) for one of our converted files or folders;
    None for anything else. A single network's file is taken by no role (its folder is)."""
    if is_converted_base(path):
        return "a converted SD1.x model folder", MODEL_ROLES
    meta = _flax_metadata(path)
    if meta is None:
        return None
    cls = meta.get("config_class")
    if "motion" in meta or cls == "MotionConfig":
        version = json.loads(meta.get("motion", "{}")).get("version")
        return f"a converted motion module ({version or 'Flax params'})", ("motion_module",)
    if cls in _NETWORK_NAMES:
        return f"a converted {_NETWORK_NAMES[cls]} alone (Flax params)", ()
    if "alpha" in meta and meta.get("source") == "animatediff_jax.train":
        return TRAINED_FACTORS, ()
    return f"Flax params ({cls or 'no config'})", ()


def check_model_path(path: str | None, role: str, names: Mapping[str, str] = FLAGS,
                     labels: Mapping[str, str] = FLAGS) -> None:
    """Refuse `path` for `role` (a `loading.ModelFiles` field) when it is one of our converted files the
    role does not take, or (base / dreambooth) a folder holding no SD1.x model. The message names the
    path as `names[role]` (sample's flag, or a prompt config's `c.yaml: entry: key`) and what takes a
    file by `labels` (the flags, or the entry's keys)."""
    if path is None or not os.path.exists(path):
        return
    name, label = names[role], labels[role]
    found = converted_role(path)
    if found is not None:
        what, roles = found
        if role in roles:
            return
        models = " or ".join(labels[r] for r in MODEL_ROLES)
        if roles:
            hint = f"{' or '.join(labels[r] for r in roles)} take{'s' if len(roles) == 1 else ''} it"
        elif "alone" in what and is_converted_base(os.path.dirname(os.path.abspath(path))):
            hint = f"{models} take the folder holding it ({os.path.dirname(path) or '.'})"
        elif "alone" in what:
            hint = f"{models} take a whole model (unet, vae and text_encoder files together)"
        elif what == TRAINED_FACTORS:
            hint = (f"{labels['motion_loras']} or {labels['loras']} take the LoRA the run exported beside it, or one "
                    "that `python -m convert export-motion-lora` writes from it")
        else:
            hint = "no sample flag takes it"
        raise InputError(f"{name} {path}: {what}, not what {label} takes; {hint}")  # a file of the wrong kind
    kind = _other_kind(path) if role in ("motion_module", *MODEL_ROLES) else None  # LoRA roles: their readers say
    if kind in KIND_ROLES and role not in KIND_ROLES[kind]:
        takers = [labels[r] for r in KIND_ROLES[kind]]
        raise InputError(f"{name} {path}: {OTHER_KINDS[kind][0]}, not what {label} takes; "
                         f"{' or '.join(takers)} take{'s' if len(takers) == 1 else ''} it")
    if role in MODEL_ROLES and os.path.isdir(path) and not os.path.isdir(os.path.join(path, "unet")):
        problem = incomplete_converted_folder(path) or f"no SD1.x model here: expected {EXPECTED_MODEL}"
        raise InputError(f"{name} {path}: {problem}")


def _other_kind(path: str) -> str | None:
    """Another tool's `.safetensors` file's kind (`checkpoint_kind`, from its header); None for anything
    else, and for a file that cannot be read (its loader says why)."""
    if not (os.path.isfile(path) and path.lower().endswith(".safetensors")):
        return None
    try:
        with open_state_dict(path) as sd:
            return checkpoint_kind(list(sd), sd.metadata)
    except InputError:
        return None
