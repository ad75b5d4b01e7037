"""The paper's motion module: a temporal transformer over the frames at every spatial position.

    x (B, F, H, W, C) -> GroupNorm `norm` -> (B*H*W, F, C) -> Linear proj_in
      -> transformer_blocks_N: [LayerNorm -> + sinusoidal position encoding -> self-attention over
         frames] x 2 (attn1, attn2: "Temporal_Self", "Temporal_Self"; x 1, attn1 only, with
         MotionConfig.double_self_attention False: SparseCtrl), then LayerNorm norm3 -> GEGLU ff
      -> Linear proj_out (zero-initialised, so a new module starts as the identity) -> + x

The input GroupNorm (MotionConfig.input_norm):
  * "frame" (default): statistics per frame, as the original AnimateDiff code computes them
    (it folds frames into the batch first). The released checkpoints were trained this way.
  * "joint": statistics over all frames of a sample, as diffusers' AnimateDiffTransformer3D does.
Its group count is MotionConfig.norm_num_groups (the original always uses 32).
The position encoding is a fixed sinusoid of length `max_seq_length`, regenerated, never a parameter;
clips may have any frame count up to that length, or any count with a `window`: FreeNoise's
window-based attention fusion (Qiu et al. 2023; diffusers' FreeNoiseTransformerBlock), where each
block's attentions run on windows of frames (each window position-encoded from 0), their outputs are
averaged with the window weights (`frame_windows.py`), and the feed-forward runs on every frame once.
Every window containing a frame counts, the last (end-aligned) one included; diffusers' block takes
from that last window only the frames no earlier window covered (the same result when the windows
tile the frames, e.g. 24 frames in windows of 16 every 4).
Parameter names follow diffusers' MotionAdapter.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from animatediff_jax.models.attention import Attention
from animatediff_jax.models.configs import MotionConfig
from animatediff_jax.models.embeddings import sinusoidal_positions
from animatediff_jax.models.frame_windows import context_windows, window_weights
from animatediff_jax.models.resnet import GroupNorm
from animatediff_jax.models.transformer_2d import FeedForward, layer_norm


class TemporalTransformerBlock(nn.Module):
    """Two (or, `double_self_attention=False`, one) position-encoded temporal self-attentions and a
    GEGLU feed-forward, each residual.

    x: (N, F, C) with N = batch * pixels; returns the same shape. `window`: (length, stride, weighting)
    for FreeNoise's attention fusion over windows of frames (module docstring), or None.
    """
    heads: int
    max_seq_length: int
    layer_norm_eps: float = 1e-5
    double_self_attention: bool = True
    attention_impl: str = "auto"
    window: tuple[int, int, str] | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, frames, c = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        layers = [(layer_norm(f"norm{i}", self.layer_norm_eps, **kw),
                   Attention(self.heads, c // self.heads, implementation=self.attention_impl, name=f"attn{i}", **kw))
                  for i in ((1, 2) if self.double_self_attention else (1,))]

        def attend(h):  # (M, L, C) sequences of L frames, positions 0..L-1
            pe = sinusoidal_positions(self.max_seq_length, c)[:h.shape[1]].astype(self.dtype)
            for norm, attention in layers:
                h = h + attention(norm(h) + pe)
            return h

        windows = None if self.window is None else context_windows(frames, self.window[0], self.window[1])
        if windows is None or len(windows) == 1:
            x = attend(x)
        else:  # every window as one batch: (N, W, L, C) -> (N * W, L, C)
            out = attend(x[:, windows].reshape(n * len(windows), windows.shape[1], c))
            weights = np.tile(window_weights(windows.shape[1], self.window[2]), len(windows))  # per window frame
            totals = np.zeros(frames, np.float32)
            np.add.at(totals, windows.ravel(), weights)
            weighted = out.reshape(n, windows.size, c).astype(jnp.float32) * jnp.asarray(weights)[None, :, None]
            fused = jnp.zeros((n, frames, c), jnp.float32).at[:, windows.ravel()].add(weighted)
            x = (fused / jnp.asarray(totals)[None, :, None]).astype(x.dtype)
        return x + FeedForward(name="ff", **kw)(layer_norm("norm3", self.layer_norm_eps, **kw)(x))


class MotionModule(nn.Module):
    """One motion module (diffusers AnimateDiffTransformer3D). x: (B, F, H, W, C) -> same shape.

    `scale` multiplies the module's residual (ComfyUI's "motion scale"): x + scale * h. 1 is the
    paper's module exactly (no multiplication is traced), 0 turns the module off. `window`:
    (length, stride, weighting) of FreeNoise's attention fusion (module docstring), or None."""
    config: MotionConfig
    attention_impl: str = "auto"
    scale: float = 1.0
    window: tuple[int, int, str] | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"motion module expects (B, F, H, W, C) video, got shape {x.shape}")
        b, f, hh, ww, c = x.shape
        attended = f if self.window is None else min(f, self.window[0])  # frames one attention sees
        if attended > cfg.max_seq_length:
            raise ValueError(f"{attended} frames exceed the motion module's position-encoding length "
                             f"{cfg.max_seq_length} (max_seq_length)")
        if c % cfg.num_attention_heads:
            raise ValueError(f"{c} channels are not divisible into {cfg.num_attention_heads} heads")
        if cfg.input_norm not in ("frame", "joint"):
            raise ValueError(f"MotionConfig.input_norm must be 'frame' or 'joint', got {cfg.input_norm!r}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, mode=cfg.input_norm, name="norm", **kw)(x)
        h = h.transpose(0, 2, 3, 1, 4).reshape(b * hh * ww, f, c)  # sequences over frames
        h = nn.Dense(c, name="proj_in", **kw)(h)
        for i in range(cfg.num_transformer_blocks):
            h = TemporalTransformerBlock(cfg.num_attention_heads, cfg.max_seq_length, cfg.layer_norm_eps,
                                         cfg.double_self_attention, self.attention_impl, self.window,
                                         name=f"transformer_blocks_{i}", **kw)(h)
        zero = nn.initializers.zeros if cfg.zero_init_proj_out else nn.initializers.lecun_normal()
        h = nn.Dense(c, kernel_init=zero, name="proj_out", **kw)(h)
        if self.scale != 1.0:
            h = h * jnp.asarray(self.scale, h.dtype)
        return x + h.reshape(b, hh, ww, f, c).transpose(0, 3, 1, 2, 4).astype(x.dtype)
