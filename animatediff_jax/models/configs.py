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
