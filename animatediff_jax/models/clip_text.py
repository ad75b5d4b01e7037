"""CLIP text encoder (the ViT-L/14 text tower SD1.x conditions on), as transformers' `CLIPTextModel`.

token + position embeddings -> N pre-LayerNorm encoder layers with a causal mask
(self_attn q/k/v/out_proj, layer_norm1/2, mlp fc1 -> activation -> fc2) -> final_layer_norm;
the pooled output is the hidden state at the end-of-text token.

Parameter paths equal `convert.naming.state_dict_to_flax(CLIPTextModel.state_dict())`:
`text_model/embeddings/token_embedding/embedding`, `text_model/encoder/layers_0/self_attn/q_proj/kernel`,
`text_model/final_layer_norm/scale`, ...

Clip skip follows diffusers' `StableDiffusionPipeline.encode_prompt`: `clip_skip=k` takes the output
of encoder layer N-k (k=1: the penultimate layer; what A1111 calls "clip skip 2") and applies
`final_layer_norm` to it; the layers after it are not computed. `clip_skip=0` is the plain model.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from animatediff_jax.models.configs import CLIPTextConfig

Dtype = jnp.dtype

# transformers' ACT2FN names for the activations CLIP text models use.
_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class CLIPTextOutput(NamedTuple):
    last_hidden_state: jax.Array  # (N, L, D), after final_layer_norm
    pooler_output: jax.Array  # (N, D), last_hidden_state at the end-of-text token


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """(N, L) ids -> (N,) index of the pooled token, by transformers' rule.

    Configs from before transformers PR #24773 carry `eos_token_id == 2`; for them the pooled token
    is the highest id in the sequence (CLIP's end-of-text is the last vocabulary entry). Otherwise
    it is the first occurrence of `eos_token_id` (padding may reuse the same id).
    """
    if eos_token_id == 2:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPAttention(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x (N, L, D), mask (N, 1, L, L) bool (True = attend) -> (N, L, D)."""
        n, length, dim = x.shape
        heads = self.config.num_attention_heads
        dense = lambda name: nn.Dense(dim, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        split = lambda t: t.reshape(n, length, heads, dim // heads)  # (N, L, H, Dh)
        q, k, v = (split(dense(name)(x)) for name in ("q_proj", "k_proj", "v_proj"))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
        return dense("out_proj")(out.reshape(n, length, dim))


class CLIPMLP(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        if c.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"CLIP text: unsupported hidden_act {c.hidden_act!r}; known: {sorted(_ACTIVATIONS)}")
        x = nn.Dense(c.intermediate_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
        x = _ACTIVATIONS[c.hidden_act](x)
        return nn.Dense(c.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(x)


class CLIPEncoderLayer(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: nn.LayerNorm(epsilon=self.config.layer_norm_eps, name=name, **kw)
        x = x + CLIPAttention(self.config, name="self_attn", **kw)(norm("layer_norm1")(x), mask)
        return x + CLIPMLP(self.config, name="mlp", **kw)(norm("layer_norm2")(x))


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        """(N, L) ids -> (N, L, D) token + position embeddings."""
        c = self.config
        embed = lambda num, name: nn.Embed(num, c.hidden_size, dtype=self.dtype,
                                           param_dtype=self.param_dtype, name=name)
        positions = jnp.arange(input_ids.shape[-1])
        return (embed(c.vocab_size, "token_embedding")(input_ids)
                + embed(c.max_position_embeddings, "position_embedding")(positions)[None])


class CLIPEncoder(nn.Module):
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, num_layers: int) -> jax.Array:
        """Runs the first `num_layers` layers: (N, L, D) -> (N, L, D)."""
        for i in range(num_layers):
            x = CLIPEncoderLayer(self.config, self.dtype, self.param_dtype, name=f"layers_{i}")(x, mask)
        return x


def causal_mask(input_ids: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
    """(N, 1, L, L) bool, True = attend: causal, and restricted to non-padding keys if a mask is given."""
    n, length = input_ids.shape
    mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if attention_mask is not None:
        mask = mask & (attention_mask[:, None, None, :] != 0)
    return jnp.broadcast_to(mask, (n, 1, length, length))


class CLIPTextTransformer(nn.Module):
    """transformers' `CLIPTextModel.text_model`."""
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 clip_skip: int = 0) -> CLIPTextOutput:
        """input_ids (N, L) int, L <= max_position_embeddings; attention_mask (N, L): 1 = token,
        0 = padding (SD1.x passes none: padding is then only hidden from earlier tokens by causality)."""
        c = self.config
        length = input_ids.shape[-1]
        if length > c.max_position_embeddings:
            raise ValueError(f"CLIP text: sequence length {length} > max_position_embeddings "
                             f"{c.max_position_embeddings}; tokenize with truncation")
        if not 0 <= clip_skip < c.num_hidden_layers:
            raise ValueError(f"CLIP text: clip_skip must be in [0, {c.num_hidden_layers}), got {clip_skip}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = CLIPTextEmbeddings(c, name="embeddings", **kw)(input_ids)
        x = CLIPEncoder(c, name="encoder", **kw)(x, causal_mask(input_ids, attention_mask),
                                                 c.num_hidden_layers - clip_skip)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="final_layer_norm", **kw)(x)
        pooled = x[jnp.arange(x.shape[0]), eos_positions(input_ids, c.eos_token_id)]
        return CLIPTextOutput(x, pooled)


class CLIPTextModel(nn.Module):
    """transformers' `CLIPTextModel`: params live under `text_model/`."""
    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None,
                 clip_skip: int = 0) -> CLIPTextOutput:
        """See `CLIPTextTransformer`; `clip_skip` must be a Python int (it changes the graph)."""
        return CLIPTextTransformer(self.config, self.dtype, self.param_dtype, name="text_model")(
            input_ids, attention_mask, clip_skip)
