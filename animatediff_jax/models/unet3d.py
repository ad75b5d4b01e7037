"""The inflated SD1.x UNet with motion modules (AnimateDiff), on channels-last video latents.

    sample (B, F, H, W, C_in), timesteps (B,) or scalar, text (B, T, D) -> (B, F, H, W, C_out) float32

Every 2D op (convs, GroupNorms, spatial attention) runs per frame; the text embedding serves every
frame of its sample. A motion module follows each resnet(+attention) layer of every down block
(layers_per_block of them) and up block (layers_per_block + 1), and the mid block's attention iff
`motion.use_mid_block`. `motion=None` gives the frame-wise 2D UNet (SD1.x applied to each frame).
With `motion.resnet_norm == "joint"` (v1) the resnet GroupNorms and conv_norm_out pool statistics
over all frames of a sample, as the original non-inflated GroupNorm did. A ControlNet's residuals
(`down_block_additional_residuals`, `mid_block_additional_residual`) are added to the skips and the mid
block's output as in diffusers.

The parameter tree is the Flax rename (`convert.naming.state_dict_to_flax`) of diffusers'
`UNetMotionModel.state_dict()` without its `pos_embed.pe` buffers; with `motion=None` it is that of
`UNet2DConditionModel`.
"""
from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from animatediff_jax.models.configs import MotionConfig, UNetConfig, fitting
from animatediff_jax.models.embeddings import TimestepEmbedding, timestep_embedding
from animatediff_jax.models.motion_module import MotionModule
from animatediff_jax.models.resnet import Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D, activation, conv
from animatediff_jax.models.transformer_2d import Transformer2DModel
from animatediff_jax.scale_limits import MOTION, scale_problem

DOWN_BLOCKS = {"CrossAttnDownBlock2D": True, "DownBlock2D": False,
               "CrossAttnDownBlockMotion": True, "DownBlockMotion": False}
UP_BLOCKS = {"CrossAttnUpBlock2D": True, "UpBlock2D": False,
             "CrossAttnUpBlockMotion": True, "UpBlockMotion": False}
REMAT_POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable",
                  "dots_with_no_batch_dims_saveable")


def _rematted(cls, remat: bool | str):
    """`cls`, or `nn.remat(cls)` with the named jax.checkpoint_policies policy."""
    if remat is False or remat is None:
        return cls
    if remat is True:
        return nn.remat(cls)
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; use True, False or one of {REMAT_POLICIES}")
    return nn.remat(cls, policy=getattr(jax.checkpoint_policies, remat))


class _Layers(nn.Module):
    """Shared fields and the layer factories of the UNet's blocks."""
    config: UNetConfig
    motion: MotionConfig | None
    attention_impl: str = "auto"
    remat: bool | str = False
    motion_scale: float = 1.0
    motion_window: tuple[int, int, str] | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _kw(self):
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def resnet(self, out_channels: int, name: str):
        cfg = self.config
        norm = self.motion.resnet_norm if self.motion is not None else "frame"
        return _rematted(ResnetBlock2D, self.remat)(
            out_channels, groups=cfg.norm_num_groups, eps=cfg.norm_eps, temb_channels=4 * cfg.block_out_channels[0],
            norm=norm, act_fn=cfg.act_fn, name=name, **self._kw())

    def spatial(self, channels: int, heads: int, name: str):
        return _rematted(Transformer2DModel, self.remat)(
            heads, channels // heads, norm_num_groups=self.config.norm_num_groups,
            use_linear_projection=self.config.use_linear_projection, attention_impl=self.attention_impl,
            name=name, **self._kw())

    def temporal(self, name: str):
        return _rematted(MotionModule, self.remat)(self.motion, self.attention_impl, self.motion_scale,
                                                   self.motion_window, name=name, **self._kw())


class DownBlock(_Layers):
    """resnets_j (+ attentions_j) (+ motion_modules_j), then downsamplers_0 unless last."""
    index: int = 0

    @nn.compact
    def __call__(self, x, temb, context):
        cfg, i = self.config, self.index
        ch = cfg.block_out_channels[i]
        has_attention = DOWN_BLOCKS[cfg.down_block_types[i]]
        skips = []
        for j in range(cfg.layers_per_block):
            x = self.resnet(ch, f"resnets_{j}")(x, temb)
            if has_attention:
                x = self.spatial(ch, cfg.heads(i), f"attentions_{j}")(x, context)
            if self.motion is not None:
                x = self.temporal(f"motion_modules_{j}")(x)
            skips.append(x)
        if i < len(cfg.block_out_channels) - 1:
            x = Downsample2D(ch, padding=cfg.downsample_padding, name="downsamplers_0", **self._kw())(x)
            skips.append(x)
        return x, skips


class MidBlock(_Layers):
    """resnets_0, attentions_0, (motion_modules_0), resnets_1."""

    @nn.compact
    def __call__(self, x, temb, context):
        cfg = self.config
        ch = cfg.block_out_channels[-1]
        x = self.resnet(ch, "resnets_0")(x, temb)
        x = self.spatial(ch, cfg.heads(len(cfg.block_out_channels) - 1), "attentions_0")(x, context)
        if self.motion is not None and self.motion.use_mid_block:
            x = self.temporal("motion_modules_0")(x)
        return self.resnet(ch, "resnets_1")(x, temb)


class UpBlock(_Layers):
    """(concat skip -> resnets_j (+ attentions_j) (+ motion_modules_j)) x (layers+1), upsamplers_0."""
    index: int = 0

    @nn.compact
    def __call__(self, x, skips, temb, context, size=None):
        cfg, i = self.config, self.index
        n = len(cfg.block_out_channels)
        ch = cfg.block_out_channels[n - 1 - i]
        has_attention = UP_BLOCKS[cfg.up_block_types[i]]
        for j in range(cfg.layers_per_block + 1):
            x = jnp.concatenate([x, skips[-1 - j]], axis=-1)
            x = self.resnet(ch, f"resnets_{j}")(x, temb)
            if has_attention:
                x = self.spatial(ch, cfg.heads(n - 1 - i), f"attentions_{j}")(x, context)
            if self.motion is not None:
                x = self.temporal(f"motion_modules_{j}")(x)
        if i < n - 1:
            x = Upsample2D(ch, name="upsamplers_0", **self._kw())(x, size)
        return x


class UNet3DConditionModel(nn.Module):
    """AnimateDiff's inflated UNet. `remat`: False, True or a jax.checkpoint_policies name.

    `motion_scale` multiplies every motion module's residual (1: the paper's UNet, bit for bit; 0:
    the frame-wise UNet); `motion_block_scales` multiplies it further per block, as
    (("down_blocks_0", 0.5), ("mid_block", 1.2), ...) pairs of block names and factors.
    `motion_window`: (length, stride, weighting) of the motion modules' FreeNoise attention fusion
    (`motion_module.py`; sampling's context scope "motion"), or None."""
    config: UNetConfig
    motion: MotionConfig | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: str = "auto"
    remat: bool | str = False
    motion_scale: float = 1.0
    motion_block_scales: tuple[tuple[str, float], ...] = ()
    motion_window: tuple[int, int, str] | None = None

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, down_block_additional_residuals=None,
                 mid_block_additional_residual=None):
        """sample (B, F, h, w, C_in), timesteps (B,) or scalar, encoder_hidden_states (B, T, D) or per
        frame (B, F, T, D) -> (B, F, h, w, C_out) float32.

        `down_block_additional_residuals` / `mid_block_additional_residual` (diffusers' names and
        semantics, e.g. a ControlNet's outputs): added to the down blocks' skip connections (one tensor
        per skip, conv_in's first: 1 + down blocks x layers_per_block + downsamplers, each
        (B, F, h_i, w_i, C_i) or spatially pooled (B, F, 1, 1, C_i)) and to the mid block's output.
        None adds nothing (bit-identical to no residuals). ValueError on a count or shape mismatch."""
        cfg = self.config
        check_inputs(cfg, sample, encoder_hidden_states)
        scales = motion_scales(cfg, self.motion_scale, self.motion_block_scales)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        blocks = dict(config=cfg, motion=self.motion, attention_impl=self.attention_impl, remat=self.remat,
                      motion_window=self.motion_window, **kw)
        temb = TimestepEmbedding(4 * cfg.block_out_channels[0], cfg.act_fn, name="time_embedding", **kw)(
            timestep_features(cfg, timesteps, sample.shape[0]).astype(self.dtype))
        context = encoder_hidden_states.astype(self.dtype)

        x = conv(cfg.block_out_channels[0], 3, "conv_in", **kw)(sample.astype(self.dtype))
        skips = [x]
        for i in range(len(cfg.down_block_types)):
            x, res = DownBlock(index=i, name=f"down_blocks_{i}", motion_scale=scales[f"down_blocks_{i}"],
                               **blocks)(x, temb, context)
            skips += res
        if down_block_additional_residuals is not None:
            _check_residuals("down_block_additional_residuals", down_block_additional_residuals, skips)
            skips = [s + r.astype(s.dtype) for s, r in zip(skips, down_block_additional_residuals)]
        x = MidBlock(name="mid_block", motion_scale=scales["mid_block"], **blocks)(x, temb, context)
        if mid_block_additional_residual is not None:
            _check_residuals("mid_block_additional_residual", (mid_block_additional_residual,), (x,))
            x = x + mid_block_additional_residual.astype(x.dtype)
        for i in range(len(cfg.up_block_types)):
            n = cfg.layers_per_block + 1
            res, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[-3:-1] if skips else None
            x = UpBlock(index=i, name=f"up_blocks_{i}", motion_scale=scales[f"up_blocks_{i}"],
                        **blocks)(x, res, temb, context, size)
        norm = self.motion.resnet_norm if self.motion is not None else "frame"
        x = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, mode=norm, name="conv_norm_out", **kw)(x)
        x = conv(cfg.out_channels, 3, "conv_out", **kw)(activation(cfg.act_fn)(x))
        return x.astype(jnp.float32)


def motion_scales(cfg: UNetConfig, scale: float, block_scales: tuple[tuple[str, float], ...]) -> dict[str, float]:
    """{block name: motion-module residual multiplier}: `scale` times the block's factor in
    `block_scales` (default 1). ValueError for a scale or factor outside `scale_limits.MOTION` (a negative
    one would reverse the motion module's residual; NaN included) or a block the UNet does not have."""
    n = len(cfg.block_out_channels)
    names = [f"down_blocks_{i}" for i in range(n)] + ["mid_block"] + [f"up_blocks_{i}" for i in range(n)]
    factors = dict(block_scales)
    unknown = sorted(set(factors) - set(names))
    if unknown:
        raise ValueError(f"motion_block_scales: no block(s) {unknown}; blocks are {names}")
    for what, value in [("motion scale", scale)] + [(f"motion_block_scales: {b}", f) for b, f in factors.items()]:
        if (problem := scale_problem(float(value), MOTION)) is not None:
            raise ValueError(f"{what} {problem} (0: no motion module)")
    return {name: float(scale) * float(factors.get(name, 1.0)) for name in names}


def timestep_features(cfg: UNetConfig, timesteps, batch: int):
    """Timesteps, a scalar or (batch,) (or (1,)), -> (batch, block_out_channels[0]) float32 sinusoidal
    features (diffusers' `time_proj`), the input of `time_embedding`. ValueError for other shapes."""
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim > 1 or (timesteps.ndim == 1 and timesteps.shape[0] not in (1, batch)):
        raise ValueError(f"timesteps must be a scalar or shape ({batch},), got shape {timesteps.shape}")
    return timestep_embedding(jnp.broadcast_to(timesteps.reshape(-1), (batch,)), cfg.block_out_channels[0],
                              cfg.flip_sin_to_cos, cfg.freq_shift)


def check_inputs(cfg: UNetConfig, sample, text) -> None:
    """Clear errors for inputs or configs this UNet (or a ControlNet's encoder copy) cannot run."""
    fitting(cfg)
    unknown = [t for t in cfg.down_block_types if t not in DOWN_BLOCKS] + [
        t for t in cfg.up_block_types if t not in UP_BLOCKS]
    if unknown:
        raise ValueError(f"UNetConfig: unsupported block types {unknown}")
    if sample.ndim != 5 or sample.shape[-1] != cfg.in_channels:
        raise ValueError(f"sample must be (batch, frames, height, width, {cfg.in_channels}), got {sample.shape}")
    per_frame = text.ndim == 4 and text.shape[1] == sample.shape[1]  # (B, F, T, D): prompt travel
    if not (text.ndim == 3 or per_frame) or text.shape[0] != sample.shape[0] \
            or text.shape[-1] != cfg.cross_attention_dim:
        raise ValueError(f"encoder_hidden_states must be ({sample.shape[0]}, tokens, {cfg.cross_attention_dim})"
                         f" or per frame ({sample.shape[0]}, {sample.shape[1]}, tokens, "
                         f"{cfg.cross_attention_dim}), got {text.shape}")


def _check_residuals(name: str, residuals, targets) -> None:
    """ValueError unless `residuals` are one per target, each the target's (B, F, h, w, C) shape or
    its spatial mean's (B, F, 1, 1, C) (ControlNets with global_pool_conditions)."""
    want = [tuple(t.shape) for t in targets]
    got = [tuple(getattr(r, "shape", ())) for r in residuals]
    ok = len(got) == len(want) and all(
        len(g) == 5 and (g == w or g == w[:2] + (1, 1) + w[4:]) for g, w in zip(got, want))
    if not ok:
        raise ValueError(f"{name}: expected {len(want)} tensor(s) shaped {want} (or spatially pooled, "
                         f"h = w = 1), got {len(got)} shaped {got}")
