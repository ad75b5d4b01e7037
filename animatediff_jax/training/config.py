"""Training configuration: YAML files mirroring the original AnimateDiff training configs.

    cfg = load_config("configs/training/training.yaml", ["train_batch_size=8", "mesh.fsdp=4"])

`DEFAULTS` lists every key there is (with the original's names where they carry over); a file or a
command-line override may only set keys that exist here, so a typo is an error, not a silent
default. Overrides are `dotted.key=value`, the value parsed as YAML (`1e-4`, `[a, b]`, `null`).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import yaml

# Mappings whose keys are free (model config fields, checked by the config dataclasses themselves).
OPEN_SECTIONS = ("unet_config", "vae_config", "text_encoder_config", "motion_module_kwargs")

DEFAULTS: dict[str, Any] = {
    "image_finetune": False,          # train the 2D UNet on frames (no motion module)
    # Base model: a diffusers folder or a single SD1.x file read by convert/. null = random init
    # from the *_config sections below (tests, benchmarks, the miniature world).
    "pretrained_model_path": None,
    "tokenizer_path": None,           # default: <pretrained_model_path>/tokenizer
    "unet_config": {},                # UNetConfig fields (random init / overriding the folder's)
    "vae_config": {},
    "text_encoder_config": {},
    "motion_module_version": "v2",    # v1 | v2 | v3: MotionConfig preset for a fresh module
    "motion_module_kwargs": {},       # MotionConfig fields over the preset
    "motion_module_path": None,       # start from this module (original or MotionAdapter format)
    "noise_schedule": "B",            # A (scaled_linear) | B (linear .00085-.012) | C (linear .0001-.02)
    "prediction_type": "epsilon",     # epsilon | v_prediction
    "train_data": {
        "source": "procedural",       # procedural | tfds
        "dataset_dir": None,          # tfds: a built dataset directory (video clips or pre-computed latents)
        "num_clips": 100000,          # procedural: dataset size; 0 = empty (an error)
        "seed": 0,                    # shuffle (and procedural world) seed
        "style": "plain",
        "sample_size": 256,
        "sample_n_frames": 16,
    },
    "trainable_modules": ["motion_modules."],  # unused with LoRA (lora.rank > 0)
    # LoRA / MotionLoRA: train only low-rank factors (W + alpha/rank · up @ down) on the attention
    # projections of the motion modules ("motion", needs motion_module_path) or of the spatial
    # attn1/attn2 ("unet"); the whole UNet stays frozen. rank 0 = off. alpha null = rank. file:
    # the export under --workdir (default motion_lora.ckpt, original format | lora.safetensors, kohya).
    "lora": {"rank": 0, "alpha": None, "targets": "motion", "file": None},
    "cfg_random_null_text_ratio": 0.1,
    "learning_rate": 1.0e-4,
    "lr_scheduler": "constant",       # constant | cosine | linear, after warmup
    "lr_warmup_steps": 0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_weight_decay": 1.0e-2,
    "adam_epsilon": 1.0e-8,
    "max_grad_norm": 1.0,
    "train_batch_size": 4,            # global batch (all hosts), per optimizer step
    "gradient_accumulation_steps": 1,
    "gradient_checkpointing": False,  # nn.remat over UNet blocks
    "mixed_precision_training": True,  # bfloat16 compute, float32 master weights
    "attention_impl": "auto",
    "max_train_steps": 100,
    "checkpointing_steps": 60,
    "checkpoints_total_limit": 3,     # keep the last K checkpoints
    "log_every_steps": 10,
    "compilation_cache_dir": None,    # persist compiled executables here (restarts compile nothing)
    "global_seed": 42,
    "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
    "sharding_rules": [],             # [[regex, [axis|null, ...]], ...] before the defaults
    "distributed": {"initialize": False, "coordinator_address": None, "num_processes": None,
                    "process_id": None},
    "export_formats": ["original", "diffusers"],  # motion module written at the end
    # Validation sampling (DDIM over the training schedule) to <workdir>/samples/step-<N>/*.gif
    "validation_data": {
        "prompts": [],
        "num_inference_steps": 25,
        "guidance_scale": 8.0,
        "video_length": None,         # default: train_data.sample_n_frames (1 with image_finetune)
        "width": None,                # default: train_data.sample_size
        "height": None,
    },
    "validation_steps": 0,            # sample every N steps; 0 = only at validation_steps_tuple
    "validation_steps_tuple": [],     # and at these steps (the original's [2, 50])
}


def _merge(base: dict, update: Mapping, where: str) -> None:
    for key, value in update.items():
        name = f"{where}{key}"
        if key not in base:
            raise ValueError(f"unknown config key {name!r} (known here: {sorted(base)})")
        if isinstance(base[key], dict) and base[key] and not isinstance(value, Mapping):
            raise ValueError(f"config key {name!r} is a section; give a mapping, got {value!r}")
        if key in OPEN_SECTIONS:
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {name!r} must be a mapping, got {value!r}")
            base[key] = {**base[key], **value}
        elif isinstance(base[key], dict) and base[key]:
            _merge(base[key], value, name + ".")
        else:
            base[key] = value


def parse_override(text: str) -> dict:
    """'a.b=1' -> {'a': {'b': 1}} (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"command-line override {text!r} is not key=value")
    key, value = text.split("=", 1)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return out


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """DEFAULTS <- YAML file <- key=value overrides; unknown keys raise naming the key (and file)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a training config must be a YAML mapping")
        try:
            _merge(cfg, data, "")
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    for text in overrides:
        _merge(cfg, parse_override(text), "")
    return cfg
