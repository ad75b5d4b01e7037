"""Model configurations as plain frozen dataclasses.

Field names follow the diffusers config JSONs (`unet/config.json`, `vae/config.json`,
`text_encoder/config.json`, MotionAdapter `config.json`) so `from_dict` reads those files directly.
The same code builds the real SD1.5 networks and the tiny ones the tests use.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping


def _from_dict(cls, d: Mapping[str, Any], strict: bool = False):
    """Build `cls` from a (diffusers) config dict, ignoring keys it does not know unless `strict`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {k for k in d if k.startswith("_")})
    if strict and unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    kwargs = {}
    for k, v in d.items():
        if k in names:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


@dataclass(frozen=True)
class UNetConfig:
    """SD1.x UNet2DConditionModel layout (defaults = SD1.5)."""
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = (
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    layers_per_block: int = 2
    # diffusers' historical misnomer: for SD1.x this is the number of heads (head dim = C / heads).
    attention_head_dim: int | tuple[int, ...] = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    act_fn: str = "silu"
    sample_size: int = 64

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        return _from_dict(cls, d)

    def heads(self, block: int) -> int:
        """Number of spatial attention heads at down-block index `block`."""
        h = self.num_attention_heads if self.num_attention_heads is not None else self.attention_head_dim
        return h[block] if isinstance(h, tuple) else h


@dataclass(frozen=True)
class MotionConfig:
    """The paper's motion module and where it is inserted (defaults = v2).

    `input_norm`: "frame" normalises the module's input GroupNorm per frame, as the original
    AnimateDiff code (and the released checkpoints) do; "joint" normalises over all frames, as
    diffusers' AnimateDiffTransformer3D does. `resnet_norm`: "frame" (v2/v3, inflated GroupNorm) or
    "joint" (v1: resnet GroupNorms see all frames at once).
    """
    num_attention_heads: int = 8
    num_transformer_blocks: int = 1
    max_seq_length: int = 32  # sinusoidal position-encoding length (24 for v1)
    use_mid_block: bool = True
    norm_num_groups: int = 32
    norm_eps: float = 1e-6  # GroupNorm eps of the module input (original and diffusers)
    layer_norm_eps: float = 1e-5
    input_norm: Literal["frame", "joint"] = "frame"
    resnet_norm: Literal["frame", "joint"] = "frame"
    zero_init_proj_out: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MotionConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class VAEConfig:
    """SD1.x AutoencoderKL (defaults = SD1.5)."""
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4
    layers_per_block: int = 2
    norm_num_groups: int = 32
    act_fn: str = "silu"
    scaling_factor: float = 0.18215
    sample_size: int = 512

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent along each side (diffusers' `vae_scale_factor`): 2 ** (down blocks - 1), 8 for SD1.x."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VAEConfig":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class CLIPTextConfig:
    """CLIP ViT-L/14 text transformer as transformers' CLIPTextConfig (defaults = SD1.x)."""
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    pad_token_id: int = 1
    bos_token_id: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPTextConfig":
        return _from_dict(cls, d)


def to_dict(config) -> dict[str, Any]:
    """JSON-ready dict of any config above (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


SD15_UNET = UNetConfig()
SD15_VAE = VAEConfig()
SD15_TEXT = CLIPTextConfig()
MOTION_V1 = MotionConfig(max_seq_length=24, use_mid_block=False, resnet_norm="joint")
MOTION_V2 = MotionConfig(max_seq_length=32, use_mid_block=True)
MOTION_V3 = MotionConfig(max_seq_length=32, use_mid_block=False)
MOTION_VERSIONS = {"v1": MOTION_V1, "v2": MOTION_V2, "v3": MOTION_V3}


# ---- Original AnimateDiff inference YAMLs (configs/inference/v*.yaml) --------------------------------

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
    import yaml  # local: the dataclasses above need no YAML

    where = "<dict>"
    if not isinstance(source, Mapping):
        where = str(source)
        with open(source) as f:
            source = yaml.safe_load(f)
        if not isinstance(source, Mapping):
            raise ValueError(f"{where}: expected a mapping at the top level")

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
