"""ResNet block, GroupNorm and the 2x down/up samplers, shared by the UNet and the VAE.

Inputs are channels-last images (N, H, W, C) or videos (B, F, H, W, C). Convolutions are 2D and run
per frame (Flax convolutions treat every leading axis as batch). GroupNorm on a video is either
per frame ("frame": the inflated GroupNorm of AnimateDiff v2/v3, each frame normalised alone) or
joint ("joint": statistics over all frames of a sample, as the original AnimateDiff v1 resnets did).
Parameter names follow diffusers: norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut, conv.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

NormMode = Literal["frame", "joint"]


def activation(name: str):
    """The activation function called `name` in diffusers configs."""
    fns = {"silu": nn.silu, "swish": nn.silu, "gelu": nn.gelu, "relu": nn.relu}
    if name not in fns:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(fns)}")
    return fns[name]


def group_norm(x, num_groups: int, eps: float, scale, bias, reduce_frames: bool = False):
    """GroupNorm of channels-last x: (N, H, W, C) or (B, F, H, W, C), statistics in float32.

    Statistics run over the spatial axes and the channels of a group; with `reduce_frames` (5D input
    only) also over the frame axis, i.e. jointly over all frames of a sample.
    """
    c = x.shape[-1]
    if c % num_groups:
        raise ValueError(f"GroupNorm: {c} channels are not divisible into {num_groups} groups")
    if reduce_frames and x.ndim != 5:
        raise ValueError(f"joint (all-frame) GroupNorm needs (B, F, H, W, C) input, got shape {x.shape}")
    first = 1 if reduce_frames else x.ndim - 3  # first reduced axis
    xg = x.astype(jnp.float32).reshape(*x.shape[:-1], num_groups, c // num_groups)
    axes = tuple(range(first, xg.ndim - 2)) + (xg.ndim - 1,)
    mean = xg.mean(axis=axes, keepdims=True)
    var = jnp.square(xg - mean).mean(axis=axes, keepdims=True)
    y = ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


class GroupNorm(nn.Module):
    """GroupNorm with diffusers semantics (biased variance) and params `scale`, `bias`."""
    num_groups: int = 32
    epsilon: float = 1e-5
    mode: NormMode = "frame"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.mode not in ("frame", "joint"):
            raise ValueError(f"GroupNorm mode must be 'frame' or 'joint', got {self.mode!r}")
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        return group_norm(x.astype(self.dtype), self.num_groups, self.epsilon, scale, bias,
                          reduce_frames=self.mode == "joint")


def conv(features: int, kernel: int, name: str, dtype, param_dtype, stride: int = 1, padding=None):
    """2D convolution with PyTorch-style symmetric padding (kernel // 2 unless given)."""
    pad = kernel // 2 if padding is None else padding
    if isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=dtype,
                   param_dtype=param_dtype, name=name)


class ResnetBlock2D(nn.Module):
    """diffusers ResnetBlock2D (pre-activation, optional time-embedding shift, 1x1 shortcut).

    x: (N, H, W, C_in) or (B, F, H, W, C_in); temb: (N, T) resp. (B, T) (shared by all frames) or None.
    Returns (..., H, W, out_channels).
    """
    out_channels: int
    groups: int = 32
    eps: float = 1e-5
    temb_channels: int | None = None
    output_scale_factor: float = 1.0
    norm: NormMode = "frame"
    act_fn: str = "silu"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None):
        act = activation(self.act_fn)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: GroupNorm(self.groups, self.eps, self.norm, name=name, **kw)  # noqa: E731
        h = conv(self.out_channels, 3, "conv1", **kw)(act(norm("norm1")(x)))
        if self.temb_channels is not None:
            if temb is None:
                raise ValueError("ResnetBlock2D built with temb_channels needs a time embedding")
            t = nn.Dense(self.out_channels, name="time_emb_proj", **kw)(act(temb))
            h = h + t.reshape(t.shape[:1] + (1,) * (h.ndim - 2) + t.shape[-1:])
        h = conv(self.out_channels, 3, "conv2", **kw)(act(norm("norm2")(h)))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut", **kw)(x)
        return ((x.astype(h.dtype) + h) / self.output_scale_factor).astype(self.dtype)


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv `conv`. padding=1 (UNet); padding=0 pads right/bottom by one (SD VAE)."""
    out_channels: int
    padding: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # (..., H, W, C) -> (..., ceil(H/2), ceil(W/2), out)
        pad = self.padding if self.padding else ((0, 1), (0, 1))
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype, stride=2, padding=pad)(x)


def upsample_nearest(x, size: tuple[int, int] | None = None):
    """Nearest-neighbour resize of (..., H, W, C) to `size` (default 2H, 2W) as torch 'nearest'."""
    h, w = x.shape[-3], x.shape[-2]
    oh, ow = size if size is not None else (2 * h, 2 * w)
    rows = (jnp.arange(oh) * h) // oh
    cols = (jnp.arange(ow) * w) // ow
    return jnp.take(jnp.take(x, rows, axis=-3), cols, axis=-2)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 (or to `size`) then 3x3 conv `conv`."""
    out_channels: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, size: tuple[int, int] | None = None):
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype)(upsample_nearest(x, size))
