"""The UNet's spatial transformer (diffusers Transformer2DModel with BasicTransformerBlocks).

Runs per frame on channels-last video (B, F, H, W, C) or images (N, H, W, C): self-attention over the
H*W tokens of each frame, cross-attention from every token to the text context (B, T, D), GEGLU
feed-forward. Per-frame cross-attention with one context per sample equals cross-attention of all
F*H*W tokens of a sample at once, so the text keys/values are computed once per sample, not per frame.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from animatediff_jax.models.attention import Attention
from animatediff_jax.models.resnet import GroupNorm


def layer_norm(name: str, eps: float, dtype, param_dtype):
    """LayerNorm with PyTorch semantics (two-pass variance), params `scale`, `bias`."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)


class FeedForward(nn.Module):
    """GEGLU feed-forward: net_0/proj (dim -> 2*mult*dim), value * gelu(gate), net_2 (-> dim)."""
    mult: int = 4
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        return nn.Dense(dim, name="net_2", **kw)(GEGLU(self.mult * dim, name="net_0", **kw)(x))


class GEGLU(nn.Module):
    """proj (-> 2*features), then value * gelu(gate) (exact gelu, as diffusers' GEGLU)."""
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        value, gate = HalvedDense(2 * self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(x)
        return value * nn.gelu(gate, approximate=False)


class HalvedDense(nn.Module):
    """nn.Dense(features) (same params, `kernel` (in, features) and `bias`, same initialisers) returning
    its output's two halves along the last axis, each from its own half of the kernel. The same values
    as splitting one product; but the gradient of a split is a concatenation that writes the whole
    (tokens, features) gradient once more, and two products need none (GEGLU's backward: 4.7 ms of a
    141 ms SD1.5 + v2 train step on an H200)."""
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        half = self.features // 2
        return x @ kernel[:, :half] + bias[:half], x @ kernel[:, half:] + bias[half:]


class BasicTransformerBlock(nn.Module):
    """norm1 -> attn1 (self, per frame) ; norm2 -> attn2 (cross to context) ; norm3 -> ff, each residual.

    x: (B, F, L, C) tokens per frame; context: (B, T, D).
    """
    heads: int
    dim_head: int
    layer_norm_eps: float = 1e-5
    attention_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        b, f, l, c = x.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = lambda name: Attention(self.heads, self.dim_head, implementation=self.attention_impl,  # noqa: E731
                                      name=name, **kw)
        norm = lambda name: layer_norm(name, self.layer_norm_eps, **kw)  # noqa: E731
        x = x + attn("attn1")(norm("norm1")(x).reshape(b * f, l, c)).reshape(x.shape)
        if context.ndim == 4:  # per-frame context (B, F, T, D) (prompt travel): each frame its own text
            h = attn("attn2")(norm("norm2")(x).reshape(b * f, l, c), context.reshape(b * f, *context.shape[2:]))
        else:
            h = attn("attn2")(norm("norm2")(x).reshape(b, f * l, c), context)
        x = x + h.reshape(x.shape)
        return x + FeedForward(name="ff", **kw)(norm("norm3")(x))


class Transformer2DModel(nn.Module):
    """GroupNorm `norm` -> proj_in (1x1 conv, or linear) -> transformer_blocks_N -> proj_out, residual.

    x: (B, F, H, W, C) or (N, H, W, C); context: (B, T, D) resp. (N, T, D).
    """
    heads: int
    dim_head: int
    num_layers: int = 1
    norm_num_groups: int = 32
    use_linear_projection: bool = False
    attention_impl: str = "auto"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        video = x.ndim == 5
        if not video:
            x = x[:, None]
        b, f, h, w, c = x.shape
        if not (context.ndim == 3 or (context.ndim == 4 and context.shape[1] == f)) or context.shape[0] != b:
            raise ValueError(f"context must be (batch={b}, tokens, dim) or (batch, frames={f}, tokens, dim), "
                             f"got shape {context.shape}")
        inner = self.heads * self.dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        proj = ((lambda n, d: nn.Dense(d, name=n, **kw)) if self.use_linear_projection  # noqa: E731
                else (lambda n, d: nn.Conv(d, (1, 1), name=n, **kw)))
        hid = GroupNorm(self.norm_num_groups, 1e-6, name="norm", **kw)(x)
        hid = proj("proj_in", inner)(hid).reshape(b, f, h * w, inner)
        for i in range(self.num_layers):
            hid = BasicTransformerBlock(self.heads, self.dim_head, attention_impl=self.attention_impl,
                                        name=f"transformer_blocks_{i}", **kw)(hid, context)
        out = proj("proj_out", c)(hid.reshape(b, f, h, w, inner)) + x
        return out if video else out[:, 0]
