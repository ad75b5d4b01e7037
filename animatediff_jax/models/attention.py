"""One attention function with several kernels, and the diffusers-named `Attention` projection module.

Spatial self-attention, cross-attention to the text, the motion module's temporal attention and the
VAE's mid-block attention all call `attention(q, k, v, implementation=...)`:

* ``"auto"``      (default) picks per backend and shape with `select_implementation`.
* ``"xla"``       plain einsum + softmax; under bfloat16/float16 the scores and softmax are float32.
                  Materialises the (B, H, Lq, Lk) scores: fast for short sequences only.
* ``"chunked"``   memory-efficient, any backend: blocked over (batch·head) rows, queries *and* keys
                  with an online (running max / running sum) softmax, each block's scores sized to
                  stay in a CPU core's cache (~1 MiB), so a 4096-token self-attention never
                  materialises the (Lq, Lk) score matrix and XLA emits one batched dot per block.
                  Same result as ``"xla"`` (flash-attention algorithm, Dao et al. 2022).
* ``"cudnn"``     flash attention via ``jax.nn.dot_product_attention(implementation="cudnn")``; GPU with
                  bfloat16/float16 inputs and a head dim that cuDNN supports. Elsewhere: ``"chunked"``
                  with one warning.
* ``"tpu_flash"`` the Pallas TPU flash-attention kernel JAX ships
                  (``jax.experimental.pallas.ops.tpu.flash_attention``); TPU with sequence lengths that
                  are multiples of its 128 block. Elsewhere: ``"chunked"`` with one warning.

No JAX library kernel avoids the score matrix on CPU (``jax.nn.dot_product_attention``'s ``xla`` path
materialises it; the Pallas kernels are GPU/TPU only), hence ``"chunked"``. Measured kernel x tokens
tables: BENCHMARKS.md, ``benchmarks/attention_speed.py``.
"""
from __future__ import annotations

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "chunked", "cudnn", "tpu_flash")
# Blocks of "chunked", measured on CPU at SD1.5's head size 40 (BENCHMARKS.md, attention kernels): 1024
# queries x 512 keys with 2 rows per block ran 0.88x / 0.93x / 0.98x the time of 512 x 512 with 1 row at
# 1024 / 2048 / 4096 tokens (medians of per-round ratios, interleaved), and the same at head size 8.
QUERY_CHUNK = 1024      # queries per block of "chunked"
KEY_CHUNK = 512         # keys per block of "chunked" (one online-softmax step)
BLOCK_SCORES = 2 ** 20  # float32 scores per block (4 MiB): rows per block = BLOCK_SCORES // (Lq_blk * Lk_blk)
CHUNKED_MIN_KEYS = 256  # "auto" off cuDNN/TPU flash: "chunked" from Lq, Lk >= this, "xla" below
TPU_FLASH_BLOCK = 128   # the Pallas TPU kernel's default block; sequence lengths must be multiples of it
FALLBACK = "chunked"    # what runs where "cudnn" or "tpu_flash" cannot (any backend, any length)
_warned: set[str] = set()


def attention(q, k, v, *, implementation: str = "auto", query_chunk: int = QUERY_CHUNK,
              key_chunk: int = KEY_CHUNK):
    """softmax(q kᵀ / sqrt(D)) v per head.

    q: (B, Lq, H, D); k, v: (B, Lk, H, D)  ->  (B, Lq, H, D) in v's dtype.
    `query_chunk`/`key_chunk` size the blocks of ``"chunked"`` only. Raises ValueError on
    mismatched shapes or an unknown implementation.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention: expected q (B, Lq, H, D) and k = v (B, Lk, H, D); "
                         f"got q {q.shape}, k {k.shape}, v {v.shape}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
    kernel, reason = resolve_implementation(implementation, jax.default_backend(), q.dtype, q.shape[1], k.shape[1],
                                            q.shape[-1], _compute_capability(), jax.device_count())
    if reason is not None:
        _warn_once(_fallback_message(implementation, reason))
    if kernel == "cudnn":
        return _cudnn(q, k, v)
    if kernel == "tpu_flash":
        return _tpu_flash(q, k, v)
    if kernel == "chunked":
        return _chunked(q, k, v, query_chunk, key_chunk)
    return _xla(q, k, v)


def resolve_implementation(implementation: str, backend: str, dtype, lq: int, lk: int, head_dim: int,
                           compute_capability: str | None = None, devices: int = 1) -> tuple[str, str | None]:
    """(the kernel `attention` runs for `implementation` with these inputs, why the one asked for
    cannot run or None) — pure: ``"auto"`` is `select_implementation`'s choice; ``"cudnn"`` and
    ``"tpu_flash"`` fall back to ``"chunked"`` where they cannot run (the reason says why)."""
    if implementation == "auto":
        return select_implementation(backend, dtype, lq, lk, head_dim, compute_capability, devices), None
    reason = (cudnn_unsupported(backend, dtype, head_dim, compute_capability) if implementation == "cudnn" else
              tpu_flash_unsupported(backend, lq, lk) if implementation == "tpu_flash" else None)
    return (FALLBACK, reason) if reason is not None else (implementation, None)


def select_implementation(backend: str, dtype, lq: int, lk: int, head_dim: int,
                          compute_capability: str | None = None, devices: int = 1) -> str:
    """What ``"auto"`` runs for these inputs (pure; `compute_capability` like "9.0" on GPU; `devices`:
    how many devices the program may be sharded over).

    GPU: ``"cudnn"`` where cuDNN flash attention takes the dtype and head dim (SD1.5's 40 and 80
    everywhere; 160 only on Hopper or later — cuDNN allows head dims up to 128 before sm90, 256 from
    it), else ``"chunked"``. TPU: ``"tpu_flash"`` on a single device where both lengths are multiples
    of 128 (SD1.5's spatial self-attention) — XLA cannot partition a Pallas (Mosaic) kernel over a
    sharded batch without a shard_map, so with several devices ``auto`` stays with XLA kernels — else ``"chunked"`` for long and ``"xla"`` for short attention (text
    cross-attention, the motion module's frames). CPU: ``"chunked"`` when both lengths are ≥ 256
    (spatial self-attention from a 16x16 latent up), ``"xla"`` otherwise (measured:
    benchmarks/attention_speed.py).
    """
    long = min(lq, lk) >= CHUNKED_MIN_KEYS
    if backend == "gpu" and cudnn_unsupported(backend, dtype, head_dim, compute_capability) is None:
        return "cudnn"
    if backend == "tpu" and devices == 1 and tpu_flash_unsupported(backend, lq, lk) is None:
        return "tpu_flash"
    return "chunked" if long else "xla"


def unavailable(implementation: str, backend: str, dtype) -> str | None:
    """Why `implementation` runs on no input at all on `backend` in `dtype` (None: it may run; whether it
    does can still depend on the shapes, `resolve_implementation`)."""
    if implementation == "cudnn":
        if backend != "gpu":
            return f"backend is {backend!r}, cuDNN needs a GPU"
        if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
            return f"dtype is {jnp.dtype(dtype)}, cuDNN flash attention needs bfloat16 or float16"
    if implementation == "tpu_flash" and backend != "tpu":
        return f"backend is {backend!r}, the Pallas flash kernel needs a TPU"
    return None


def warn_unavailable(implementation: str, backend: str, dtype) -> None:
    """The warning `attention` gives while tracing when `implementation` cannot run on `backend` in `dtype`,
    given up front: a program read from the compilation cache is not traced again, so a command that may
    run one says it before (once per process: tracing then repeats nothing)."""
    reason = unavailable(implementation, backend, dtype)
    if reason is not None:
        _warn_once(_fallback_message(implementation, reason))


def _fallback_message(implementation: str, reason: str) -> str:
    return f"attention implementation {implementation!r} unavailable ({reason}); using {FALLBACK!r} instead."


def cudnn_unsupported(backend: str, dtype, head_dim: int, compute_capability: str | None) -> str | None:
    """Why cuDNN flash attention cannot run these inputs (None when it can)."""
    reason = unavailable("cudnn", backend, dtype)
    if reason is not None:
        return reason
    major = int(str(compute_capability or "0").split(".")[0])
    max_head_dim = 256 if major >= 9 else 128  # as jax._src.cudnn.fused_attention_stablehlo checks
    if head_dim % 8 or head_dim > max_head_dim:
        return (f"head dim {head_dim} is not a multiple of 8 up to {max_head_dim} "
                f"(compute capability {compute_capability})")
    return None


def tpu_flash_unsupported(backend: str, lq: int, lk: int) -> str | None:
    """Why the Pallas TPU flash-attention kernel cannot run these lengths (None when it can)."""
    reason = unavailable("tpu_flash", backend, None)
    if reason is not None:
        return reason
    if lq % TPU_FLASH_BLOCK or lk % TPU_FLASH_BLOCK:
        return f"sequence lengths {lq}, {lk} are not multiples of {TPU_FLASH_BLOCK}"
    return None


def _compute_capability() -> str | None:
    device = jax.devices()[0]
    return getattr(device, "compute_capability", None)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _cudnn(q, k, v):
    """cuDNN flash attention with odd sequence lengths padded by one: its backward refuses them
    ("Unsupported sequence length Q 4096, KV 77" for SD's 77 text tokens; jax 0.11.2, cuDNN 9.19,
    H200, measured in BENCHMARKS.md), while even lengths and 77 keys padded to 78 and masked by length
    both differentiate. The padded key is masked out (`key_value_seq_lengths`); the padded query row is
    dropped from the output."""
    lq, lk = q.shape[1], k.shape[1]
    lengths = jnp.full((k.shape[0],), lk, jnp.int32) if lk % 2 else None
    out = jax.nn.dot_product_attention(_pad_to(q, 1, 2), _pad_to(k, 1, 2), _pad_to(v, 1, 2),
                                       key_value_seq_lengths=lengths, implementation="cudnn")
    return out[:, :lq]


def _tpu_flash(q, k, v):
    # Lazy: the Pallas TPU kernels pull in Mosaic, needed only on a TPU.
    from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention
    bhld = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731
    out = flash_attention(bhld(q), bhld(k), bhld(v), sm_scale=1.0 / math.sqrt(q.shape[-1]))
    return bhld(out).astype(v.dtype)


def _xla(q, k, v):
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _pad_to(x, axis: int, multiple: int):
    pad = (-x.shape[axis]) % multiple
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths)


def _largest_divisor_up_to(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, max(limit, 1)) + 1) if n % d == 0)


def _chunked(q, k, v, query_chunk: int, key_chunk: int):
    """Flash attention in XLA: rows (B·H) in groups of g, queries in blocks of qc, keys in blocks of kc.

    Every block is a (g, qc, D) x (g, kc, D) batched dot whose (g, qc, kc) float32 scores stay
    cache-sized; keys are folded in with a running max / running sum (online softmax).
    """
    if query_chunk < 1 or key_chunk < 1:
        raise ValueError(f"query_chunk and key_chunk must be positive, got {query_chunk}, {key_chunk}")
    b, lq, h, d = q.shape
    lk = k.shape[1]
    rows, qc, kc = b * h, min(query_chunk, lq), min(key_chunk, lk)
    g = _largest_divisor_up_to(rows, BLOCK_SCORES // (qc * kc))
    scale = 1.0 / math.sqrt(d)

    def blocks(x, length, chunk):  # (B, L, H, D) -> (rows/g, n, g, chunk, D), L padded to n·chunk
        x = _pad_to(x.transpose(0, 2, 1, 3).reshape(rows, length, d), 1, chunk)
        return x.reshape(rows // g, g, -1, chunk, d).swapaxes(1, 2)

    # The scale is folded into q once (not into every block's scores), and padded keys get a -inf
    # bias only when the key length needs padding: each saves a pass over every block's scores.
    qb, kb, vb = blocks(q * jnp.asarray(scale, q.dtype), lq, qc), blocks(k, lk, kc), blocks(v, lk, kc)
    nk = kb.shape[1]
    key_bias = (jnp.where(jnp.arange(nk * kc) < lk, 0.0, -jnp.inf).reshape(nk, kc) if lk % kc
                else jnp.zeros((nk, 0), jnp.float32))

    def one_group(group):  # (nq, g, qc, D), (nk, g, kc, D) x2 -> (nq, g, qc, D)
        q_g, k_g, v_g = group

        def one_query_block(qi):  # (g, qc, D) -> (g, qc, D)
            def step(carry, kv):
                m, s, acc = carry  # running max, running sum (g, qc); numerator (g, qc, D); float32
                ki, vi, bias = kv
                scores = jnp.einsum("rqd,rkd->rqk", qi, ki, preferred_element_type=jnp.float32)
                if bias.size:
                    scores = scores + bias
                m_new = jnp.maximum(m, scores.max(axis=-1))
                correction = jnp.exp(m - m_new)
                p = jnp.exp(scores - m_new[..., None])
                s = s * correction + p.sum(axis=-1)
                acc = acc * correction[..., None] + jnp.einsum(
                    "rqk,rkd->rqd", p.astype(v.dtype), vi, preferred_element_type=jnp.float32)
                return (m_new, s, acc), None

            init = (jnp.full((g, qc), -jnp.inf, jnp.float32), jnp.zeros((g, qc), jnp.float32),
                    jnp.zeros((g, qc, d), jnp.float32))
            (_, s, acc), _ = jax.lax.scan(step, init, (k_g, v_g, key_bias))
            return (acc / s[..., None]).astype(v.dtype)

        return jax.lax.map(one_query_block, q_g)

    out = jax.lax.map(one_group, (qb, kb, vb))  # (rows/g, nq, g, qc, D)
    out = out.swapaxes(1, 2).reshape(rows, -1, d)[:, :lq]
    return out.reshape(b, h, lq, d).transpose(0, 2, 1, 3)


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter names: to_q, to_k, to_v, to_out_0.

    x: (N, L, query_dim), context: (N, Lc, context_dim) or None (self-attention) -> (N, L, query_dim).
    """
    heads: int
    dim_head: int
    qkv_bias: bool = False
    implementation: str = "auto"
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
