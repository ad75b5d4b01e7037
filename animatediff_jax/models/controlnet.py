"""ControlNet (SD1.x, Zhang et al. 2023) and the SparseCtrl encoder (Guo et al. 2023, AnimateDiff v3),
on channels-last video latents, returning the residuals the UNet adds to its skip connections.

    sample (B, F, h, w, C_in), timesteps (B,) or scalar, text (B, T, D) or per frame (B, F, T, D),
    controlnet_cond (B, F, H, W, C_cond)
      -> conv_in(sample) + controlnet_cond_embedding(controlnet_cond)
      -> down_blocks_i (the UNet encoder's copy) -> mid_block
      -> zero 1x1 convs: controlnet_down_blocks_N on every skip (conv_in's output, each resnet/attention
         layer, each downsampler: 1 + sum of layers_per_block (+1 per downsampler)), controlnet_mid_block
      -> x conditioning_scale (guess_mode: x 10^linspace(-1, 0) per depth), spatial means if
         global_pool_conditions
      -> (down_block_res_samples: tuple of (B, F, h_i, w_i, C_i), mid_block_res_sample (B, F, h_mid, w_mid, C_mid))

`ControlNetModel` is 2D: every frame is encoded alone (diffusers' `ControlNetModel` on the (B*F)
frames). `SparseControlNetModel` (diffusers' `SparseControlNetModel`, the original
animatediff/models/sparse_controlnet.py) puts a motion module after each down-block layer (one
temporal self-attention per block, none in the mid block), appends the conditioning mask (1 on key
frames) to the condition's channels, embeds it with one 3x3 conv at latent resolution
(`use_simplified_condition_embedding`) or the full embedding, and by default sees zeros instead of the
noisy sample. The encoder copy reuses the UNet's `DownBlock` / `MidBlock`.

The parameter tree is the Flax rename (`convert.naming.state_dict_to_flax`) of the diffusers model's
`state_dict()` (SparseControlNetModel's without its `pos_embed.pe` buffers).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from animatediff_jax.models.configs import MOTION_SPARSECTRL, ControlNetConfig, MotionConfig
from animatediff_jax.models.embeddings import TimestepEmbedding
from animatediff_jax.models.resnet import conv
from animatediff_jax.models.unet3d import DownBlock, MidBlock, check_inputs, timestep_features


class ControlNetConditioningEmbedding(nn.Module):
    """conv_in -> silu -> (blocks_2k: 3x3, silu, blocks_2k+1: 3x3 stride 2, silu) per width step -> conv_out.

    (..., H, W, C_cond) -> (..., H / 2^(n-1), W / 2^(n-1), conditioning_embedding_channels) for n =
    len(block_out_channels) (diffusers' ControlNetConditioningEmbedding; SD1.x: 512 px -> 64 latents).
    """
    conditioning_embedding_channels: int
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        chans = self.block_out_channels
        x = nn.silu(conv(chans[0], 3, "conv_in", **kw)(x))
        for i in range(len(chans) - 1):
            x = nn.silu(conv(chans[i], 3, f"blocks_{2 * i}", **kw)(x))
            x = nn.silu(conv(chans[i + 1], 3, f"blocks_{2 * i + 1}", stride=2, **kw)(x))
        return conv(self.conditioning_embedding_channels, 3, "conv_out", **kw)(x)


class _ControlNetEncoder(nn.Module):
    """The body both networks share; subclasses declare dtype, param_dtype, attention_impl and call
    `encode` from their compact `__call__`."""
    config: ControlNetConfig

    def encode(self, sample, timesteps, encoder_hidden_states, controlnet_cond, motion: MotionConfig | None,
               motion_scale: float, conditioning_scale, guess_mode: bool):
        """(down_block_res_samples, mid_block_res_sample) for checked inputs (module docstring)."""
        cfg = self.config
        ucfg = cfg.unet_config()
        check_inputs(ucfg, sample, encoder_hidden_states)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        temb = TimestepEmbedding(4 * cfg.block_out_channels[0], cfg.act_fn, name="time_embedding", **kw)(
            timestep_features(ucfg, timesteps, sample.shape[0]).astype(self.dtype))
        context = encoder_hidden_states.astype(self.dtype)
        x = conv(cfg.block_out_channels[0], 3, "conv_in", **kw)(sample.astype(self.dtype))
        controlnet_cond = controlnet_cond.astype(self.dtype)
        if cfg.use_simplified_condition_embedding:  # SparseCtrl: one 3x3 conv at latent resolution
            x = x + conv(cfg.block_out_channels[0], 3, "controlnet_cond_embedding", **kw)(controlnet_cond)
        else:
            x = x + ControlNetConditioningEmbedding(cfg.block_out_channels[0], cfg.conditioning_embedding_out_channels,
                                                    name="controlnet_cond_embedding", **kw)(controlnet_cond)

        blocks = dict(config=ucfg, motion=motion, attention_impl=self.attention_impl, motion_scale=motion_scale, **kw)
        skips = [x]
        for i in range(len(cfg.down_block_types)):
            x, res = DownBlock(index=i, name=f"down_blocks_{i}", **blocks)(x, temb, context)
            skips += res
        x = MidBlock(name="mid_block", **blocks)(x, temb, context)

        down = [conv(s.shape[-1], 1, f"controlnet_down_blocks_{n}", **kw)(s) for n, s in enumerate(skips)]
        mid = conv(x.shape[-1], 1, "controlnet_mid_block", **kw)(x)
        if guess_mode and not cfg.global_pool_conditions:  # diffusers: logspace(-1, 0) from shallow to deep
            scales = [10.0 ** (-1.0 + k / len(down)) for k in range(len(down) + 1)]
        else:
            scales = [1.0] * (len(down) + 1)
        scale = jnp.asarray(conditioning_scale, self.dtype)
        down = [d * (scale * s) for d, s in zip(down, scales)]
        mid = mid * (scale * scales[-1])
        if cfg.global_pool_conditions:
            down = [d.mean(axis=(2, 3), keepdims=True) for d in down]
            mid = mid.mean(axis=(2, 3), keepdims=True)
        return tuple(down), mid


class ControlNetModel(_ControlNetEncoder):
    """SD1.x ControlNet applied per frame (diffusers `ControlNetModel`); see the module docstring.

    `__call__(sample (B, F, h, w, in_channels), timesteps (B,) or scalar, encoder_hidden_states
    (B, T, D) or (B, F, T, D), controlnet_cond (B, F, h*s, w*s, conditioning_channels) floats in [0, 1]
    (s = config.condition_downsample_factor(), 8 for SD1.x), conditioning_scale=1.0, guess_mode=False)`
    -> (down_block_res_samples, mid_block_res_sample), already multiplied by `conditioning_scale`, in
    `dtype`. ValueError naming the expected shape for a condition of the wrong size or frame count.
    """
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0,
                 guess_mode: bool = False):
        cfg = self.config
        sparse = [k for k in ("concat_conditioning_mask", "use_simplified_condition_embedding",
                              "set_noisy_sample_input_to_zero") if getattr(cfg, k)]
        if sparse:
            raise ValueError(f"ControlNetModel: the config sets SparseCtrl options {sparse}; "
                             f"use SparseControlNetModel")
        controlnet_cond = checked_condition(cfg, sample, controlnet_cond)
        return self.encode(sample, timesteps, encoder_hidden_states, controlnet_cond, None, 1.0,
                           conditioning_scale, guess_mode)


class SparseControlNetModel(_ControlNetEncoder):
    """SparseCtrl's encoder (diffusers `SparseControlNetModel`); see the module docstring.

    `__call__(sample, timesteps, encoder_hidden_states, controlnet_cond, conditioning_mask,
    conditioning_scale=1.0, guess_mode=False)` as `ControlNetModel`'s, plus `conditioning_mask` (B, F)
    (1 on the key frames that carry a condition, 0 elsewhere, whose condition frames are zeros; may be
    None when not `config.concat_conditioning_mask`). The motion modules follow `motion` (default the
    v3 release's: one self-attention, none in the mid block; its `double_self_attention` must be
    False for diffusers' and the original's weights; None: the frame-wise encoder, no motion modules);
    `motion_scale` multiplies their residuals (0: the frame-wise encoder's output).
    """
    motion: MotionConfig | None = MOTION_SPARSECTRL
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "auto"
    motion_scale: float = 1.0

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, controlnet_cond, conditioning_mask=None,
                 conditioning_scale=1.0, guess_mode: bool = False):
        cfg = self.config
        controlnet_cond = checked_condition(cfg, sample, controlnet_cond)
        if self.motion is not None and self.motion.use_mid_block:
            raise ValueError("SparseControlNetModel: motion.use_mid_block must be False (SparseCtrl has no "
                             "mid-block motion module)")
        if cfg.concat_conditioning_mask:
            b, f = sample.shape[:2]
            if conditioning_mask is None or tuple(conditioning_mask.shape) != (b, f):
                raise ValueError(f"conditioning_mask: expected shape (batch, frames) = ({b}, {f}), got "
                                 f"{None if conditioning_mask is None else tuple(conditioning_mask.shape)}")
            mask = jnp.broadcast_to(jnp.asarray(conditioning_mask)[:, :, None, None, None].astype(controlnet_cond.dtype),
                                    (*controlnet_cond.shape[:-1], 1))
            controlnet_cond = jnp.concatenate([controlnet_cond, mask], axis=-1)
        if cfg.set_noisy_sample_input_to_zero:
            sample = jnp.zeros_like(sample)
        return self.encode(sample, timesteps, encoder_hidden_states, controlnet_cond, self.motion,
                           self.motion_scale, conditioning_scale, guess_mode)


def checked_condition(cfg: ControlNetConfig, sample, controlnet_cond):
    """controlnet_cond in RGB channel order (flipped for `controlnet_conditioning_channel_order` "bgr",
    as diffusers does). ValueError naming the expected shape unless it is (B, F, h*s, w*s,
    conditioning_channels) for a sample (B, F, h, w, C) and s = cfg.condition_downsample_factor()."""
    if cfg.controlnet_conditioning_channel_order not in ("rgb", "bgr"):
        raise ValueError(f"ControlNetConfig.controlnet_conditioning_channel_order must be 'rgb' or 'bgr', "
                         f"got {cfg.controlnet_conditioning_channel_order!r}")
    if getattr(sample, "ndim", 0) != 5:
        raise ValueError(f"sample must be (batch, frames, height, width, {cfg.in_channels}), got "
                         f"{getattr(sample, 'shape', None)}")
    b, f, h, w = sample.shape[:4]
    s = cfg.condition_downsample_factor()
    want = (b, f, h * s, w * s, cfg.conditioning_channels)
    got = tuple(getattr(controlnet_cond, "shape", ()))
    if got != want:
        what = "latent" if s == 1 else f"pixel ({s} x the latent {h}x{w})"
        raise ValueError(f"controlnet_cond: expected shape (batch, frames, height, width, channels) = {want} "
                         f"({what} size, one condition per frame), got {got}")
    return controlnet_cond[..., ::-1] if cfg.controlnet_conditioning_channel_order == "bgr" else controlnet_cond
