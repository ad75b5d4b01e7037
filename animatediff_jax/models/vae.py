"""The SD1.x variational autoencoder (diffusers' `AutoencoderKL`) and chunked video encode/decode.

Encoder: conv_in -> down_blocks_i (resnets, then a stride-2 conv with SD's asymmetric (0, 1) padding,
except after the last block) -> mid_block (resnet, single-head self-attention, resnet) ->
conv_norm_out -> SiLU -> conv_out (2 x latent channels: mean and log-variance) -> quant_conv.
Decoder: post_quant_conv -> conv_in -> mid_block -> up_blocks_i (layers_per_block + 1 resnets, then
nearest x2 + conv, except after the last block) -> conv_norm_out -> SiLU -> conv_out.
All resnet/attention GroupNorms use eps 1e-6, as diffusers' VAE does.

Images are channels-last (N, H, W, C) in [-1, 1]; latents are (N, H/2^(n-1), W/2^(n-1), latent) for
n blocks. Parameter paths equal `convert.naming.state_dict_to_flax(AutoencoderKL.state_dict())`:
`encoder/down_blocks_0/resnets_0/conv1/kernel`, `encoder/mid_block/attentions_0/to_q/kernel`,
`quant_conv/kernel`, `decoder/up_blocks_0/upsamplers_0/conv/kernel`, ...

`encode_video` (and `encode_video_moments`) / `decode_video` work on (B, F, H, W, C) videos a few frames at a time (`lax.map` over
chunks, so 16 frames at 512x512 fit in memory) and apply / remove the latent scaling factor. They are
meant to be traced inside the caller's compiled program (the pipeline's decode, the trainer's step):
jit them with `xla_options.jit` (static `vae` and `chunk_size`) to call them on their own.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from animatediff_jax.models.attention import Attention
from animatediff_jax.models.configs import VAEConfig, fitting
from animatediff_jax.models.resnet import Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D, activation, conv

EPS = 1e-6  # every GroupNorm of diffusers' Encoder/Decoder
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp


class VAEAttention(nn.Module):
    """Mid-block self-attention over all pixels: GroupNorm, one head of width C, to_out_0, residual.

    Params `group_norm`, `to_q`, `to_k`, `to_v` (with bias), `to_out_0` sit directly in this scope.
    """
    channels: int
    groups: int
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.group_norm = GroupNorm(self.groups, EPS, **kw)
        self.attn = Attention(heads=1, dim_head=self.channels, qkv_bias=True,
                              implementation=self.implementation, **kw)
        nn.share_scope(self, self.attn)

    def __call__(self, x):  # (N, H, W, C) -> (N, H, W, C)
        n, h, w, c = x.shape
        y = self.attn(self.group_norm(x).reshape(n, h * w, c))
        return x.astype(y.dtype) + y.reshape(n, h, w, c)


class MidBlock(nn.Module):
    """resnets_0 -> attentions_0 -> resnets_1 at the lowest resolution."""
    channels: int
    groups: int
    act_fn: str
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        resnet = lambda name: ResnetBlock2D(self.channels, self.groups, EPS, act_fn=self.act_fn, name=name, **kw)
        x = resnet("resnets_0")(x)
        x = VAEAttention(self.channels, self.groups, self.implementation, name="attentions_0", **kw)(x)
        return resnet("resnets_1")(x)


class ResnetStack(nn.Module):
    """diffusers' DownEncoderBlock2D / UpDecoderBlock2D: `num_layers` resnets, then an optional
    sampler (`downsamplers_0` stride-2 conv, or `upsamplers_0` nearest x2 + conv)."""
    out_channels: int
    num_layers: int
    groups: int
    act_fn: str
    sampler: str | None  # "down", "up" or None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(self.num_layers):
            x = ResnetBlock2D(self.out_channels, self.groups, EPS, act_fn=self.act_fn, name=f"resnets_{j}", **kw)(x)
        if self.sampler == "down":
            x = Downsample2D(self.out_channels, padding=0, name="downsamplers_0", **kw)(x)
        elif self.sampler == "up":
            x = Upsample2D(self.out_channels, name="upsamplers_0", **kw)(x)
        return x


class Encoder(nn.Module):
    """(N, H, W, in_channels) -> (N, H/2^(n-1), W/2^(n-1), 2 * latent_channels)."""
    config: VAEConfig
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(c.block_out_channels[0], 3, "conv_in", **kw)(x.astype(self.dtype))
        last = len(c.block_out_channels) - 1
        for i, channels in enumerate(c.block_out_channels):
            x = ResnetStack(channels, c.layers_per_block, c.norm_num_groups, c.act_fn,
                            "down" if i < last else None, name=f"down_blocks_{i}", **kw)(x)
        x = MidBlock(c.block_out_channels[-1], c.norm_num_groups, c.act_fn, self.implementation,
                     name="mid_block", **kw)(x)
        x = activation(c.act_fn)(GroupNorm(c.norm_num_groups, EPS, name="conv_norm_out", **kw)(x))
        return conv(2 * c.latent_channels, 3, "conv_out", **kw)(x)


class Decoder(nn.Module):
    """(N, h, w, latent_channels) -> (N, h * 2^(n-1), w * 2^(n-1), out_channels)."""
    config: VAEConfig
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        c = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = tuple(reversed(c.block_out_channels))
        x = conv(channels[0], 3, "conv_in", **kw)(z.astype(self.dtype))
        x = MidBlock(channels[0], c.norm_num_groups, c.act_fn, self.implementation, name="mid_block", **kw)(x)
        last = len(channels) - 1
        for i, ch in enumerate(channels):
            x = ResnetStack(ch, c.layers_per_block + 1, c.norm_num_groups, c.act_fn,
                            "up" if i < last else None, name=f"up_blocks_{i}", **kw)(x)
        x = activation(c.act_fn)(GroupNorm(c.norm_num_groups, EPS, name="conv_norm_out", **kw)(x))
        return conv(c.out_channels, 3, "conv_out", **kw)(x)


class AutoencoderKL(nn.Module):
    """diffusers' AutoencoderKL (SD1.x layout). Methods: `encode`, `decode`; calling it runs both
    (encode, then decode the mean) and serves `init`. `implementation` picks the attention kernel
    of the mid-block attention ("chunked" bounds memory at high resolution)."""
    config: VAEConfig
    implementation: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        fitting(self.config)  # ValueError: only the SD1.x layout
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        latent = self.config.latent_channels
        self.encoder = Encoder(self.config, self.implementation, **kw)
        self.quant_conv = conv(2 * latent, 1, "quant_conv", **kw)
        self.post_quant_conv = conv(latent, 1, "post_quant_conv", **kw)
        self.decoder = Decoder(self.config, self.implementation, **kw)

    def encode(self, x):
        """x (N, H, W, 3) in [-1, 1] -> (mean, logvar), each (N, H/f, W/f, latent), unscaled."""
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z):
        """z (N, h, w, latent), unscaled -> x (N, h*f, w*f, 3), nominally in [-1, 1] (not clipped)."""
        return self.decoder(self.post_quant_conv(z.astype(self.dtype)))

    def __call__(self, x):
        return self.decode(self.encode(x)[0])


def sample_latent(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """A draw from the diagonal Gaussian N(mean, exp(logvar)), in float32."""
    mean = mean.astype(jnp.float32)
    noise = jax.random.normal(key, mean.shape, jnp.float32)
    return mean + jnp.exp(0.5 * logvar.astype(jnp.float32)) * noise


def _map_chunks(fn, x: jax.Array, chunk_size: int) -> jax.Array:
    """Applies per-image `fn` to x (N, ...) `chunk_size` images at a time (the last chunk padded)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n = x.shape[0]
    chunk = min(chunk_size, n)
    pad = (-n) % chunk
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    out = jax.lax.map(fn, x.reshape(-1, chunk, *x.shape[1:]))  # (n_chunks, chunk, ...)
    return out.reshape(-1, *out.shape[2:])[:n]


def encode_video_moments(vae: AutoencoderKL, params, video: jax.Array,
                         chunk_size: int = 8) -> tuple[jax.Array, jax.Array]:
    """video (B, F, H, W, 3) in [-1, 1] -> posterior (mean, logvar), each (B, F, H/f, W/f, latent),
    float32, unscaled. `params`: the VAE's params tree (what sits under "params")."""
    b, f = video.shape[:2]
    encode = lambda x: jnp.concatenate(  # (n, h, w, 2 * latent): mean | logvar
        vae.apply({"params": params}, x, method=AutoencoderKL.encode), axis=-1).astype(jnp.float32)
    moments = _map_chunks(encode, video.reshape(b * f, *video.shape[2:]), chunk_size)
    return tuple(m.reshape(b, f, *m.shape[1:]) for m in jnp.split(moments, 2, axis=-1))


def encode_video(vae: AutoencoderKL, params, video: jax.Array, key: jax.Array | None = None,
                 chunk_size: int = 8) -> jax.Array:
    """video (B, F, H, W, 3) in [-1, 1] -> scaled latents (B, F, H/f, W/f, latent), float32.

    Without `key`: the posterior mean. With it, a sample as in training: `sample_latent(key, ...)` on
    the moments with frames folded into the batch, (B*F, h, w, latent), so the draw does not depend
    on `chunk_size` and can be reproduced from stored moments.
    """
    mean, logvar = encode_video_moments(vae, params, video, chunk_size)
    if key is not None:
        fold = lambda m: m.reshape(-1, *m.shape[2:])
        mean = sample_latent(key, fold(mean), fold(logvar)).reshape(mean.shape)
    return mean * vae.config.scaling_factor


def decode_video(vae: AutoencoderKL, params, latents: jax.Array, chunk_size: int = 8) -> jax.Array:
    """Scaled latents (B, F, h, w, latent) -> video (B, F, h*f, w*f, 3), float32, nominally in [-1, 1].

    Memory grows with `chunk_size`: the SD1.5 decoder needs ~0.9 GiB of temporaries per frame of a
    chunk at 512x512 in float32 (XLA's compile-time estimate; ~7 GiB for chunks of 8).
    """
    b, f = latents.shape[:2]
    z = latents.reshape(b * f, *latents.shape[2:]) / vae.config.scaling_factor
    decode = lambda x: vae.apply({"params": params}, x, method=AutoencoderKL.decode).astype(jnp.float32)
    video = _map_chunks(decode, z, chunk_size)
    return video.reshape(b, f, *video.shape[1:])
