"""One attention function with several kernels, and the diffusers-named `Attention` projection module.

Spatial self-attention, cross-attention to the text, the motion module's temporal attention and the
VAE's mid-block attention all call `attention(q, k, v, implementation=...)`:

* ``"xla"``     plain einsum + softmax; under bfloat16/float16 the scores and softmax are float32.
* ``"chunked"`` memory-efficient: queries in chunks (``lax.map``), keys in chunks with an online
                (running max / running sum) softmax (``lax.scan``), so a 4096-token self-attention
                never materialises the (Lq, Lk) score matrix. Same result as ``"xla"``.
* ``"cudnn"``   flash attention via ``jax.nn.dot_product_attention(implementation="cudnn")``; GPU with
                bfloat16/float16 inputs only. Elsewhere it falls back to ``"xla"`` with one warning.
"""
from __future__ import annotations

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "chunked", "cudnn")
_warned: set[str] = set()


def attention(q, k, v, *, implementation: str = "xla", chunk_size: int = 1024):
    """softmax(q kᵀ / sqrt(D)) v per head.

    q: (B, Lq, H, D); k, v: (B, Lk, H, D)  ->  (B, Lq, H, D) in v's dtype.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention: expected q (B, Lq, H, D) and k = v (B, Lk, H, D); "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    if implementation == "xla":
        return _xla(q, k, v)
    if implementation == "chunked":
        return _chunked(q, k, v, chunk_size)
    if implementation == "cudnn":
        reason = _cudnn_unsupported(q)
        if reason is None:
            return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
        _warn_once(f"attention implementation 'cudnn' unavailable ({reason}); using 'xla' instead.")
        return _xla(q, k, v)
    raise ValueError(f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _cudnn_unsupported(q) -> str | None:
    """Why cuDNN flash attention cannot run these inputs (None when it can)."""
    if jax.default_backend() != "gpu":
        return f"backend is {jax.default_backend()!r}, cuDNN needs a GPU"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"dtype is {q.dtype}, cuDNN flash attention needs bfloat16 or float16"
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > 256:
        return f"head dim {head_dim} is not a multiple of 8 up to 256"
    return None


def _scores(q, k):
    """(B, Lq, H, D), (B, Lk, H, D) -> float32 scaled scores (B, H, Lq, Lk)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale


def _xla(q, k, v):
    probs = jax.nn.softmax(_scores(q, k), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _pad_to(x, axis: int, multiple: int):
    pad = (-x.shape[axis]) % multiple
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _chunked(q, k, v, chunk_size: int):
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    b, lq, h, d = q.shape
    lk = k.shape[1]
    qc, kc = min(chunk_size, lq), min(chunk_size, lk)
    # (nq, B, qc, H, D) and (nk, B, kc, H, D); padded keys are masked out below.
    q_chunks = _pad_to(q, 1, qc).reshape(b, -1, qc, h, d).swapaxes(0, 1)
    k_chunks = _pad_to(k, 1, kc).reshape(b, -1, kc, h, d).swapaxes(0, 1)
    v_chunks = _pad_to(v, 1, kc).reshape(b, -1, kc, h, d).swapaxes(0, 1)
    key_valid = (jnp.arange(k_chunks.shape[0] * kc) < lk).reshape(-1, kc)  # (nk, kc)

    def one_query_chunk(qi):  # (B, qc, H, D) -> (B, qc, H, D)
        def step(carry, kv):
            m, s, acc = carry  # running max (B,H,qc), running sum (B,H,qc), numerator (B,H,qc,D) in f32
            ki, vi, valid = kv
            scores = jnp.where(valid[None, None, None, :], _scores(qi, ki), -jnp.inf)
            m_new = jnp.maximum(m, scores.max(axis=-1))
            correction = jnp.exp(m - m_new)
            p = jnp.exp(scores - m_new[..., None])
            s = s * correction + p.sum(axis=-1)
            acc = acc * correction[..., None] + jnp.einsum(
                "bhqk,bkhd->bhqd", p.astype(v.dtype), vi, preferred_element_type=jnp.float32)
            return (m_new, s, acc), None

        init = (jnp.full((b, h, qi.shape[1]), -jnp.inf, jnp.float32),
                jnp.zeros((b, h, qi.shape[1]), jnp.float32),
                jnp.zeros((b, h, qi.shape[1], d), jnp.float32))
        (_, s, acc), _ = jax.lax.scan(step, init, (k_chunks, v_chunks, key_valid))
        return (acc / s[..., None]).transpose(0, 2, 1, 3).astype(v.dtype)

    out = jax.lax.map(one_query_chunk, q_chunks)  # (nq, B, qc, H, D)
    return out.swapaxes(0, 1).reshape(b, -1, h, d)[:, :lq]


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names: to_q, to_k, to_v, to_out_0.

    x: (N, L, query_dim), context: (N, Lc, context_dim) or None (self-attention) -> (N, L, query_dim).
    """
    heads: int
    dim_head: int
    qkv_bias: bool = False
    implementation: str = "xla"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None):
        inner = self.heads * self.dim_head
        context = x if context is None else context
        dense = lambda features, bias, name: nn.Dense(  # noqa: E731
            features, use_bias=bias, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        split = lambda t: t.reshape(*t.shape[:2], self.heads, self.dim_head)  # noqa: E731
        q = split(dense(inner, self.qkv_bias, "to_q")(x))
        k = split(dense(inner, self.qkv_bias, "to_k")(context))
        v = split(dense(inner, self.qkv_bias, "to_v")(context))
        out = attention(q, k, v, implementation=self.implementation)
        out = out.reshape(*out.shape[:2], inner)
        return dense(x.shape[-1], True, "to_out_0")(out)
