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


@pytest.mark.parametrize("lq,lk,chunk", [(37, 23, 8), (16, 16, 16), (5, 77, 1024), (64, 64, 10)])
def test_chunked_equals_xla(lq, lk, chunk):
    q, k, v = _qkv(lq, lk)
    ours = attention(q, k, v, implementation="chunked", chunk_size=chunk)
    assert ours.shape == (2, lq, 3, 8)
    assert rel_err(ours, attention(q, k, v, implementation="xla")) < 1e-6


def test_chunked_bounded_memory_4096_tokens():
    """The compiled chunked kernel needs far less temporary memory than the (Lq, Lk) score matrix."""
    q = jax.ShapeDtypeStruct((1, 4096, 1, 8), jnp.float32)
    scores_bytes = 4096 * 4096 * 4
    fn = jax.jit(lambda q, k, v: attention(q, k, v, implementation="chunked", chunk_size=512))
    mem = fn.lower(q, q, q).compile().memory_analysis()
    if mem is None:
        pytest.skip("backend reports no memory analysis")
    assert mem.temp_size_in_bytes < scores_bytes / 8, mem.temp_size_in_bytes


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_bfloat16_close_to_float32(impl):
    q, k, v = _qkv(40, 24)
    ref = attention(q, k, v, implementation=impl, chunk_size=16)
    bf = attention(*(t.astype(jnp.bfloat16) for t in (q, k, v)), implementation=impl, chunk_size=16)
    assert bf.dtype == jnp.bfloat16
    assert rel_err(bf.astype(jnp.float32), ref) < 2e-2


def test_cudnn_falls_back_with_one_warning_off_gpu():
    if jax.default_backend() == "gpu":
        pytest.skip("cuDNN is available here")
    attention_lib._warned.clear()
    q, k, v = _qkv(6, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out1 = attention(q, k, v, implementation="cudnn")
        attention(q, k, v, implementation="cudnn")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "cudnn" in messages[0] and "GPU" in messages[0], messages
    assert rel_err(out1, attention(q, k, v)) < 1e-7


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
