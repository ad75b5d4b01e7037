"""Model configurations as plain frozen dataclasses.

Field names follow the diffusers config JSONs (`unet/config.json`, `vae/config.json`,
`text_encoder/config.json`, MotionAdapter `config.json`) so `from_dict` reads those files directly.
The same code builds the real SD1.5 networks and the tiny ones the tests use.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping


def _from_dict(cls, d: Mapping[str, Any], strict: bool = False):
    """Build `cls` from a (diffusers) config dict, ignoring keys it does not know unless `strict`.
    ValueError `<cls>: <key> must be <type>, got <value>` for a value not of its field's type."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {k for k in d if k.startswith("_")})
    if strict and unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in d.items():
        if k in names:
            kwargs[k] = tuple(v) if isinstance(v, list) else v
            if not _is_of(kwargs[k], hints[k]):
                raise ValueError(f"{cls.__name__}: {k} must be {_type_name(hints[k])}, got {v!r}")
    return cls(**kwargs)


def fitting(config):
    """`config` unless its values do not fit together (`config.mismatches()`): ValueError
    `<Config>: <each mismatch>` naming the keys."""
    problems = config.mismatches()
    if problems:
        raise ValueError(f"{type(config).__name__}: {'; '.join(problems)}")
    return config


def channel_mismatches(channels_key: str, channels: tuple[int, ...], **per_block) -> list[str]:
    """What does not fit between the widths `channels` (named `channels_key`, one per block) and the
    values `per_block` (key -> one int for every block, or a list of one per block, each of which must
    divide its block's width: norm groups, attention heads): a list of the wrong length, a value that
    is not positive or does not divide its width."""
    if not channels or any(c <= 0 for c in channels):
        return [f"{channels_key} must be positive integers, got {list(channels)}"]
    problems = []
    for key, value in per_block.items():
        values = value if isinstance(value, (tuple, list)) else (value,) * len(channels)
        if len(values) != len(channels):
            problems.append(f"{key} has {len(values)} entries but {channels_key} has {len(channels)}")
        elif any(v <= 0 for v in values):
            problems.append(f"{key} must be positive, got {value!r}")
        elif any(c % v for c, v in zip(channels, values)):
            shown = list(value) if isinstance(value, tuple) else value
            problems.append(f"{key} {shown} does not divide {channels_key} "
                            f"{channels[0] if len(channels) == 1 else list(channels)}")
    return problems


def _is_of(value, hint) -> bool:
    """`value` is of the type `hint` (int, float, bool, str, None, Literal, tuple[X, ...] and unions of these);
    a bool is no number, an int is a float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_of(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_of(v, args[0]) for v in value)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return value is None if hint is type(None) else isinstance(value, hint)


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        return f"a list of {({int: 'integers', str: 'strings'})[args[0]]}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}[hint]


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
        """ValueError for a value not of its field's type or values that do not fit together."""
        return fitting(_from_dict(cls, d))

    def mismatches(self) -> list[str]:
        """The values that do not fit together: block type lists not one per block_out_channels,
        norm groups or heads (per block or not) that do not divide a block's channels."""
        n = len(self.block_out_channels)
        heads = "num_attention_heads" if self.num_attention_heads is not None else "attention_head_dim"
        return [f"{key} has {len(types)} entries but block_out_channels has {n}" for key, types in (
            ("down_block_types", self.down_block_types), ("up_block_types", self.up_block_types)) if len(types) != n
        ] + channel_mismatches("block_out_channels", self.block_out_channels, norm_num_groups=self.norm_num_groups,
                               **{heads: getattr(self, heads)})

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
    "joint" (v1: resnet GroupNorms see all frames at once). `double_self_attention`: two temporal
    self-attentions per transformer block (the motion modules: attention_block_types
    ("Temporal_Self", "Temporal_Self")) or one (SparseCtrl's encoder: ("Temporal_Self",); diffusers'
    `temporal_double_self_attention=False`, which has no attn2/norm2 parameters).
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
    double_self_attention: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MotionConfig":
        return _from_dict(cls, d)


# diffusers' SparseControlNetModel defaults where they differ from ControlNetModel's.
_SPARSE_DEFAULTS = dict(conditioning_channels=4, cross_attention_dim=768, down_block_types=(
    "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion", "DownBlockMotion"),
    concat_conditioning_mask=True, use_simplified_condition_embedding=True, set_noisy_sample_input_to_zero=True)
# diffusers ControlNet config keys whose other values this project's SD1.x networks do not implement
# (SDXL ControlNets set addition_embed_type="text_time" and transformer_layers_per_block > 1).
_CONTROLNET_ONLY = dict(transformer_layers_per_block=(1, [1]), addition_embed_type=(None,), class_embed_type=(None,),
                        encoder_hid_dim=(None,), encoder_hid_dim_type=(None,), num_class_embeds=(None,),
                        resnet_time_scale_shift=("default",), mid_block_scale_factor=(1, 1.0),
                        mid_block_type=("UNetMidBlock2DCrossAttn",), only_cross_attention=(False,),
                        transformer_layers_per_mid_block=(None, 1))


@dataclass(frozen=True)
class ControlNetConfig:
    """SD1.x ControlNet (diffusers `ControlNetModel`) and SparseCtrl encoder (`SparseControlNetModel`)
    layout; defaults = diffusers' ControlNetModel (SD1.5 ControlNet v1.1), `from_dict` of a
    SparseControlNetModel config takes SparseControlNetModel's.

    The encoder copy (conv_in, time embedding, down blocks, mid block) has the UNet's fields
    (`unet_config()`). `conditioning_channels`: channels of the control image (3: RGB; SparseCtrl RGB
    takes 4-channel VAE latents) before SparseCtrl's mask channel (`concat_conditioning_mask` adds
    one). `conditioning_embedding_out_channels`: the conv widths of `controlnet_cond_embedding`, which
    downsamples the control image 2 ** (len - 1) times (8x: pixel -> latent resolution) unless
    `use_simplified_condition_embedding` (SparseCtrl: one zero-initialised 3x3 conv, control at
    latent resolution). `global_pool_conditions`: residuals are spatial means (shuffle ControlNet).
    `set_noisy_sample_input_to_zero` (SparseCtrl; diffusers always does it): the encoder sees zeros
    instead of the noisy latents, so only the condition and the timestep steer it.
    """
    in_channels: int = 4
    conditioning_channels: int = 3
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    act_fn: str = "silu"
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1280
    attention_head_dim: int | tuple[int, ...] = 8  # = number of heads for SD1.x (diffusers' misnomer)
    num_attention_heads: int | tuple[int, ...] | None = None
    use_linear_projection: bool = False
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    global_pool_conditions: bool = False
    controlnet_conditioning_channel_order: Literal["rgb", "bgr"] = "rgb"
    # SparseCtrl only (False = ControlNetModel's behaviour; SparseControlNetModel's defaults are True)
    concat_conditioning_mask: bool = False
    use_simplified_condition_embedding: bool = False
    set_noisy_sample_input_to_zero: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ControlNetConfig":
        """From a diffusers ControlNetModel / SparseControlNetModel config.json dict, or the original
        SparseCtrl's `controlnet_additional_kwargs` merged into the UNet's (keys it does not know are
        ignored; absent keys take the defaults of the class named by `_class_name`).
        ValueError for settings only SDXL-style ControlNets use (e.g. addition_embed_type)."""
        for key, allowed in _CONTROLNET_ONLY.items():
            value = d.get(key, allowed[0])
            if isinstance(value, list) and value and all(v == value[0] for v in value):
                value = value[0]  # one value per block, all the same
            if value not in allowed:
                raise ValueError(f"ControlNet config: {key}={d[key]!r} is not supported (SD1.x ControlNets only; "
                                 f"supported: {allowed[0]!r})")
        defaults = _SPARSE_DEFAULTS if d.get("_class_name") == "SparseControlNetModel" else {}
        if "concate_conditioning_mask" in d:  # the original sparse_controlnet.py's spelling
            d = {"concat_conditioning_mask": d["concate_conditioning_mask"], **d}
        return fitting(_from_dict(cls, {**defaults, **d}))

    def mismatches(self) -> list[str]:
        """The values that do not fit together: those of the encoder copy's UNet config (`unet_config`),
        and a full condition embedding without conditioning_embedding_out_channels."""
        empty = not (self.use_simplified_condition_embedding or self.conditioning_embedding_out_channels)
        return self.unet_config().mismatches() + ["conditioning_embedding_out_channels is empty"] * empty

    def unet_config(self) -> UNetConfig:
        """The UNetConfig whose down blocks and mid block the encoder copy shares (up blocks unused)."""
        return UNetConfig(
            in_channels=self.in_channels, block_out_channels=self.block_out_channels,
            down_block_types=self.down_block_types, up_block_types=("UpBlock2D",) * len(self.block_out_channels),
            layers_per_block=self.layers_per_block, attention_head_dim=self.attention_head_dim,
            num_attention_heads=self.num_attention_heads, cross_attention_dim=self.cross_attention_dim,
            norm_num_groups=self.norm_num_groups, norm_eps=self.norm_eps,
            use_linear_projection=self.use_linear_projection, flip_sin_to_cos=self.flip_sin_to_cos,
            freq_shift=self.freq_shift, downsample_padding=self.downsample_padding, act_fn=self.act_fn)

    def condition_downsample_factor(self) -> int:
        """Control-image pixels per latent pixel along each side: 1 with the simplified (SparseCtrl)
        embedding, else 2 ** (len(conditioning_embedding_out_channels) - 1) (8 for SD1.x)."""
        if self.use_simplified_condition_embedding:
            return 1
        return 2 ** (len(self.conditioning_embedding_out_channels) - 1)


def sparsectrl_motion_config(d: Mapping[str, Any], input_norm: Literal["frame", "joint"] = "frame") -> MotionConfig:
    """The MotionConfig of a SparseCtrl encoder's motion modules from a diffusers SparseControlNetModel
    config dict: one temporal self-attention per block (`double_self_attention=False`), none in the
    mid block. `input_norm` as in MotionConfig ("joint" reproduces diffusers, "frame" the original)."""
    heads = d.get("motion_num_attention_heads", 8)
    blocks = d.get("temporal_transformer_layers_per_block", 1)
    if not isinstance(heads, int) or not isinstance(blocks, int):
        raise ValueError(f"SparseControlNetModel config: per-block motion_num_attention_heads ({heads!r}) or "
                         f"temporal_transformer_layers_per_block ({blocks!r}) are not supported; give one int")
    return MotionConfig(num_attention_heads=heads, num_transformer_blocks=blocks,
                        max_seq_length=d.get("motion_max_seq_length", 32), use_mid_block=False,
                        norm_num_groups=d.get("norm_num_groups", 32), input_norm=input_norm,
                        double_self_attention=False)


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
        """ValueError for a value not of its field's type or values that do not fit together."""
        return fitting(_from_dict(cls, d))

    def mismatches(self) -> list[str]:
        """The values that do not fit together: anything but the SD1.x layout (one DownEncoderBlock2D and
        one UpDecoderBlock2D per entry of block_out_channels), norm groups that do not divide a block's
        channels."""
        n = len(self.block_out_channels)
        problems = [f"{key} must be {n} x {kind!r} (one per block_out_channels), got {list(types)}"
                    for key, kind, types in (("down_block_types", "DownEncoderBlock2D", self.down_block_types),
                                             ("up_block_types", "UpDecoderBlock2D", self.up_block_types))
                    if types != (kind,) * n]
        return problems + channel_mismatches("block_out_channels", self.block_out_channels,
                                             norm_num_groups=self.norm_num_groups)


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
        """ValueError for a value not of its field's type or values that do not fit together."""
        return fitting(_from_dict(cls, d))

    def mismatches(self) -> list[str]:
        """The values that do not fit together: heads that do not divide hidden_size."""
        return channel_mismatches("hidden_size", (self.hidden_size,), num_attention_heads=self.num_attention_heads)


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
SD15_CONTROLNET = ControlNetConfig(cross_attention_dim=768)
# The v3 SparseCtrl encoders (v3_sd15_sparsectrl_rgb.ckpt: 4 latent channels, simplified embedding;
# ..._scribble.ckpt: 3 RGB channels, full embedding), as the original configs/inference/sparsectrl yamls.
SPARSECTRL_RGB = ControlNetConfig(**_SPARSE_DEFAULTS)
SPARSECTRL_SCRIBBLE = dataclasses.replace(SPARSECTRL_RGB, conditioning_channels=3,
                                          use_simplified_condition_embedding=False)
MOTION_SPARSECTRL = MotionConfig(max_seq_length=32, use_mid_block=False, double_self_attention=False)

# The config fields that fix the shapes of each network's parameters (the others change values only): a
# DreamBooth must match its base in them (`loading`), a resumed training run its checkpoint (`training.config`).
SHAPE_FIELDS = {"unet": ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
                         "up_block_types", "cross_attention_dim", "use_linear_projection"),
                "vae": ("in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block"),
                "text_encoder": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                 "max_position_embeddings"),
                "motion": ("num_transformer_blocks", "use_mid_block", "double_self_attention")}
