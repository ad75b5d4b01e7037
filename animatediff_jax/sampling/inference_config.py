"""Original-style inference YAMLs (`configs/inference/v*.yaml`) -> `MotionConfig` + scheduler kwargs.

The file format lives here, on the sampling side; `models/configs.py` keeps the dataclasses only.
"""
from __future__ import annotations

from typing import Any, Mapping

from animatediff_jax.models.configs import MotionConfig
from animatediff_jax.yaml_file import read_yaml_mapping


_UNET_KWARGS_DEFAULTS = {  # the original UNet3DConditionModel's defaults for absent keys
    "use_inflated_groupnorm": False, "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False, "use_motion_module": False,
    "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": False,
    "motion_module_decoder_only": False, "motion_module_type": None, "motion_module_kwargs": {},
}
_MOTION_KWARGS_DEFAULTS = {  # the original VanillaTemporalModule's defaults
    "num_attention_heads": 8, "num_transformer_block": 2,
    "attention_block_types": ["Temporal_Self", "Temporal_Self"], "cross_frame_attention_mode": None,
    "temporal_position_encoding": False, "temporal_position_encoding_max_len": 24,
    "temporal_attention_dim_div": 1, "zero_initialize": True,
}
_SCHEDULER_KEYS = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset",
                             "clip_sample", "set_alpha_to_one", "prediction_type", "timestep_spacing"})


def motion_config_from_inference_yaml(source) -> tuple[MotionConfig | None, dict[str, Any]]:
    """(MotionConfig, noise_scheduler_kwargs) from an original-style inference YAML (path or dict).

    `use_motion_module: false` gives None (the frame-wise 2D UNet). Settings this implementation does
    not have (cross-frame attention, decoder-only modules, other resolutions or block types, no position
    encoding, a head-dim divisor) are refused with an error naming the key and the file.
    """
    where = "<dict>"
    if not isinstance(source, Mapping):
        where = str(source)
        source = read_yaml_mapping(source, "inference config")

    def refuse(msg: str):
        raise ValueError(f"{where}: {msg}")

    def merged(d, defaults, section):
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            refuse(f"{section} must be a mapping")
        unknown = sorted(set(d) - set(defaults))
        if unknown:
            refuse(f"unknown keys in {section}: {unknown}")
        return {**defaults, **d}

    unknown_top = sorted(set(source) - {"unet_additional_kwargs", "noise_scheduler_kwargs"})
    if unknown_top:
        refuse(f"unknown top-level keys {unknown_top}")
    unet = merged(source.get("unet_additional_kwargs"), _UNET_KWARGS_DEFAULTS, "unet_additional_kwargs")
    scheduler = dict(source.get("noise_scheduler_kwargs") or {})
    bad_sched = sorted(set(scheduler) - _SCHEDULER_KEYS)
    if bad_sched:
        refuse(f"unknown keys in noise_scheduler_kwargs: {bad_sched}")
    for key in ("unet_use_cross_frame_attention", "unet_use_temporal_attention", "motion_module_decoder_only"):
        if unet[key]:
            refuse(f"unet_additional_kwargs.{key}: true is not supported")
    if not unet["use_motion_module"]:
        return None, scheduler
    if list(unet["motion_module_resolutions"]) != [1, 2, 4, 8]:
        refuse(f"motion_module_resolutions {unet['motion_module_resolutions']} not supported (only [1, 2, 4, 8])")
    if unet["motion_module_type"] != "Vanilla":
        refuse(f"motion_module_type {unet['motion_module_type']!r} not supported (only 'Vanilla')")
    mm = merged(unet["motion_module_kwargs"], _MOTION_KWARGS_DEFAULTS, "motion_module_kwargs")
    if list(mm["attention_block_types"]) != ["Temporal_Self", "Temporal_Self"]:
        refuse(f"attention_block_types {mm['attention_block_types']} not supported "
               "(only ['Temporal_Self', 'Temporal_Self'])")
    if mm["cross_frame_attention_mode"] is not None:
        refuse("cross_frame_attention_mode is not supported")
    if not mm["temporal_position_encoding"]:
        refuse("temporal_position_encoding: false is not supported (the released modules all use it)")
    if mm["temporal_attention_dim_div"] != 1:
        refuse(f"temporal_attention_dim_div {mm['temporal_attention_dim_div']} not supported (only 1)")
    for key in ("num_attention_heads", "num_transformer_block", "temporal_position_encoding_max_len"):
        if not isinstance(mm[key], int) or isinstance(mm[key], bool) or mm[key] < 1:
            refuse(f"motion_module_kwargs.{key} must be a positive integer, got {mm[key]!r}")
    motion = MotionConfig(
        num_attention_heads=mm["num_attention_heads"], num_transformer_blocks=mm["num_transformer_block"],
        max_seq_length=mm["temporal_position_encoding_max_len"], use_mid_block=bool(unet["motion_module_mid_block"]),
        resnet_norm="frame" if unet["use_inflated_groupnorm"] else "joint",
        zero_init_proj_out=bool(mm["zero_initialize"]))
    return motion, scheduler
