"""attention(): the kernels agree with each other and with a NumPy softmax; bf16 stays close to f32."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.models import attention as attention_lib
from animatediff_jax.models.attention import Attention, attention
from tests.utils import rel_err


def _numpy_attention(q, k, v):
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def _qkv(lq, lk, b=2, h=3, d=8, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(ks[0], (b, lq, h, d)), jax.random.normal(ks[1], (b, lk, h, d)),
            jax.random.normal(ks[2], (b, lk, h, d)))


def test_xla_matches_numpy():
    q, k, v = _qkv(7, 5)
    assert rel_err(attention(q, k, v), _numpy_attention(q, k, v)) < 1e-6


@pytest.mark.parametrize("lq,lk,qc,kc,b,h,d", [
    (37, 23, 8, 8, 2, 3, 8),      # both lengths padded, several key blocks
    (16, 16, 16, 16, 2, 3, 8),    # one block each
    (5, 77, 1024, 1024, 2, 3, 8),  # cross-attention shape: blocks larger than the lengths
    (64, 64, 10, 7, 2, 3, 8),     # blocks that divide nothing
    (100, 130, 32, 64, 3, 5, 40),  # SD1.5's head dim 40, odd row count (rows grouped by a divisor of 15)
    (1024, 1024, 256, 512, 2, 2, 16),  # the default blocks on a 32x32 latent
])
def test_chunked_equals_xla(lq, lk, qc, kc, b, h, d):
    q, k, v = _qkv(lq, lk, b=b, h=h, d=d)
    ours = attention(q, k, v, implementation="chunked", query_chunk=qc, key_chunk=kc)
    assert ours.shape == (b, lq, h, d)
    assert rel_err(ours, attention(q, k, v, implementation="xla")) < 2e-6
    assert rel_err(ours, _numpy_attention(q, k, v)) < 2e-6


def test_chunked_grad_equals_xla():
    q, k, v = _qkv(45, 45, d=16)
    loss = lambda impl: lambda q, k, v: (attention(q, k, v, implementation=impl, query_chunk=16,  # noqa: E731
                                                   key_chunk=16) ** 2).sum()
    ours, ref = jax.grad(loss("chunked"), (0, 1, 2))(q, k, v), jax.grad(loss("xla"), (0, 1, 2))(q, k, v)
    for a, r in zip(ours, ref):
        assert rel_err(a, r) < 1e-5


@pytest.mark.parametrize("backend,dtype,lq,lk,d,cc,devices,expected", [
    ("cpu", jnp.float32, 4096, 4096, 40, None, 1, "chunked"),   # spatial self-attention, 64x64 latent
    ("cpu", jnp.float32, 256, 256, 40, None, 1, "chunked"),     # threshold: both lengths >= 256
    ("cpu", jnp.float32, 255, 4096, 40, None, 1, "xla"),
    ("cpu", jnp.float32, 4096, 77, 40, None, 1, "xla"),         # text cross-attention
    ("cpu", jnp.float32, 16, 16, 40, None, 1, "xla"),           # motion module (frames)
    ("gpu", jnp.bfloat16, 4096, 4096, 40, "8.0", 1, "cudnn"),
    ("gpu", jnp.bfloat16, 1024, 77, 80, "8.0", 1, "cudnn"),
    ("gpu", jnp.bfloat16, 256, 256, 160, "8.0", 1, "chunked"),  # head dim 160 > 128 before Hopper
    ("gpu", jnp.bfloat16, 64, 64, 160, "8.0", 1, "xla"),
    ("gpu", jnp.bfloat16, 256, 256, 160, "9.0", 1, "cudnn"),    # Hopper allows up to 256
    ("gpu", jnp.float16, 16, 16, 40, "9.0", 1, "cudnn"),
    ("gpu", jnp.float32, 4096, 4096, 40, "9.0", 1, "chunked"),  # cuDNN flash needs bf16/fp16
    ("tpu", jnp.bfloat16, 4096, 4096, 40, None, 1, "tpu_flash"),
    ("tpu", jnp.bfloat16, 4096, 77, 40, None, 1, "xla"),        # 77 is not a multiple of 128
    ("tpu", jnp.bfloat16, 1000, 1000, 40, None, 1, "chunked"),
    ("tpu", jnp.bfloat16, 4096, 4096, 40, None, 8, "chunked"),  # sharded: no Pallas kernel without shard_map
])
def test_auto_selection(backend, dtype, lq, lk, d, cc, devices, expected):
    assert attention_lib.select_implementation(backend, dtype, lq, lk, d, cc, devices) == expected


@pytest.mark.parametrize("impl,backend,dtype,lq,expected,reason", [
    ("auto", "cpu", jnp.float32, 4096, "chunked", None),
    ("auto", "gpu", jnp.bfloat16, 4096, "cudnn", None),
    ("xla", "gpu", jnp.bfloat16, 4096, "xla", None),
    ("cudnn", "cpu", jnp.bfloat16, 4096, "chunked", "GPU"),
    ("cudnn", "gpu", jnp.float32, 4096, "chunked", "bfloat16"),
    ("tpu_flash", "tpu", jnp.bfloat16, 1000, "chunked", "multiples of 128"),
    ("tpu_flash", "tpu", jnp.bfloat16, 4096, "tpu_flash", None),
])
def test_resolve_names_the_kernel_that_runs_and_why_not_the_one_asked(impl, backend, dtype, lq, expected, reason):
    """What `attention` runs (and the memory estimate counts) for each implementation a user may ask for."""
    kernel, why = attention_lib.resolve_implementation(impl, backend, dtype, lq, lq, 40, "9.0", 1)
    assert kernel == expected
    assert (why is None) if reason is None else (reason in why)


def test_auto_matches_xla_on_this_backend():
    for lq, lk in [(300, 300), (7, 5)]:
        q, k, v = _qkv(lq, lk)
        assert rel_err(attention(q, k, v), attention(q, k, v, implementation="xla")) < 2e-6


def test_chunked_bounded_memory_4096_tokens():
    """The compiled chunked kernel needs far less temporary memory than the (Lq, Lk) score matrix."""
    q = jax.ShapeDtypeStruct((1, 4096, 1, 8), jnp.float32)
    scores_bytes = 4096 * 4096 * 4
    fn = jax.jit(lambda q, k, v: attention(q, k, v, implementation="chunked"))
    mem = fn.lower(q, q, q).compile().memory_analysis()
    if mem is None:
        pytest.skip("backend reports no memory analysis")
    assert mem.temp_size_in_bytes < scores_bytes / 8, mem.temp_size_in_bytes


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_bfloat16_close_to_float32(impl):
    q, k, v = _qkv(40, 24)
    ref = attention(q, k, v, implementation=impl, query_chunk=16, key_chunk=16)
    bf = attention(*(t.astype(jnp.bfloat16) for t in (q, k, v)), implementation=impl, query_chunk=16,
                   key_chunk=16)
    assert bf.dtype == jnp.bfloat16
    assert rel_err(bf.astype(jnp.float32), ref) < 2e-2


@pytest.mark.parametrize("impl,backend,needs", [("cudnn", "gpu", "GPU"), ("tpu_flash", "tpu", "TPU")])
def test_accelerator_kernels_fall_back_with_one_warning_elsewhere(impl, backend, needs):
    if jax.default_backend() == backend:
        pytest.skip(f"{impl} is available here")
    attention_lib._warned.clear()
    q, k, v = _qkv(6, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = attention(q, k, v, implementation=impl)
        attention(q, k, v, implementation=impl)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and impl in messages[0] and needs in messages[0], messages
    assert rel_err(out1, _numpy_attention(q, k, v)) < 1e-6


def test_bad_inputs_are_refused():
    q, k, v = _qkv(4, 4)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="expected q"):
        attention(q[..., :4], k, v)


def test_attention_module_names_and_shapes():
    x, ctx = jnp.ones((2, 5, 16)), jnp.ones((2, 3, 12))
    mod = Attention(heads=2, dim_head=4)
    params = mod.init(jax.random.PRNGKey(0), x, ctx)["params"]
    assert sorted(params) == ["to_k", "to_out_0", "to_q", "to_v"]
    assert "bias" not in params["to_q"] and params["to_out_0"]["bias"].shape == (16,)
    assert params["to_k"]["kernel"].shape == (12, 8)
    assert mod.apply({"params": params}, x, ctx).shape == (2, 5, 16)


@pytest.mark.parametrize("lq,lk", [(16, 77), (15, 15), (33, 32), (8, 8)])
def test_cudnn_path_pads_odd_lengths_and_keeps_values_and_gradients(monkeypatch, lq, lk):
    """cuDNN's backward refuses odd sequence lengths (measured on an H200: text cross-attention's 77 keys
    failed the train step). `_cudnn` pads them to even and masks the padded key; here cuDNN is replaced
    by JAX's XLA kernel, which checks it is only ever given even lengths."""
    real = jax.nn.dot_product_attention

    def even_only(q, k, v, *, key_value_seq_lengths=None, implementation=None):
        assert implementation == "cudnn" and q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0
        return real(q, k, v, key_value_seq_lengths=key_value_seq_lengths, implementation="xla")

    monkeypatch.setattr(jax.nn, "dot_product_attention", even_only)
    q, k, v = _qkv(lq, lk)
    assert rel_err(attention_lib._cudnn(q, k, v), attention(q, k, v, implementation="xla")) < 2e-6
    loss = lambda f: lambda q, k, v: (f(q, k, v) ** 2).sum()  # noqa: E731
    ours = jax.grad(loss(attention_lib._cudnn), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(loss(lambda q, k, v: attention(q, k, v, implementation="xla")), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and rel_err(a, b) < 2e-5
