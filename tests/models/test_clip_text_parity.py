"""CLIP text encoder vs transformers' CLIPTextModel (PyTorch), tiny random configs, CPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import SD15_TEXT, CLIPTextConfig
from animatediff_jax.params import torch_key_to_flax, unflatten
from convert.naming import state_dict_to_flax, torch_tensor_to_flax
from tests.utils import rel_err

VOCAB, LENGTH = 99, 77

CONFIGS = {
    # SD1.x-like: explicit end-of-text id (padding reuses it), quick-GELU. Word ids go above the
    # end-of-text id, so pooling at the highest id (the legacy rule) would pick a different token.
    "quick_gelu_eos": CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37,
                                     num_hidden_layers=3, num_attention_heads=4, eos_token_id=50,
                                     bos_token_id=49, pad_token_id=50),
    # Legacy config (eos_token_id == 2: pool at the highest id, here the end-of-text 98, padded with 1),
    # exact GELU, other eps / head count.
    "gelu_legacy_eos": CLIPTextConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=3, hidden_act="gelu",
                                      layer_norm_eps=1e-6, eos_token_id=2, bos_token_id=97, pad_token_id=1),
}
# (bos, end-of-text, padding) ids of the prompts fed to each config.
SPECIAL_IDS = {"quick_gelu_eos": (49, 50, 50), "gelu_legacy_eos": (97, 98, 1)}
LENGTHS = [5, 20, 75]  # padded prompts, and one that fills all 77 positions


def _torch_model(config: CLIPTextConfig):
    torch.manual_seed(0)
    model = _build_torch_model(config)
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _build_torch_model(config: CLIPTextConfig):
    torch_config = transformers.CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, max_position_embeddings=config.max_position_embeddings,
        hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps, eos_token_id=config.eos_token_id,
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id)
    return transformers.CLIPTextModel(torch_config).eval()


def _with_prefix(state_dict) -> dict:
    # transformers 5 drops the `text_model.` prefix that every SD checkpoint (and transformers 4) has.
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state_dict.items()}


def _flax_params(model) -> dict:
    sd = {k: v.numpy() for k, v in _with_prefix(model.state_dict()).items()}
    return state_dict_to_flax(sd, skip=[r"position_ids$"])


def _prompts(rng, lengths, bos, eos, pad) -> np.ndarray:
    """SD-style ids: bos, words, end-of-text, then padding to 77 positions."""
    words = np.setdiff1d(np.arange(3, VOCAB), [bos, eos, pad])
    if eos != pad:
        words = words[words < eos]  # legacy rule: end-of-text must be the highest id
    ids = np.full((len(lengths), LENGTH), pad, dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, 0] = bos
        ids[i, 1:n + 1] = rng.choice(words, size=n)
        ids[i, n + 1] = eos
    return ids


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
    config = CONFIGS[request.param]
    model = _torch_model(config)
    params = _flax_params(model)
    ids = _prompts(np.random.default_rng(0), LENGTHS, *SPECIAL_IDS[request.param])
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), output_hidden_states=True)
    return config, model, params, ids, ref


def test_param_tree_matches_rename(case):
    config, _, params, _, _ = case
    ids = jnp.zeros((1, LENGTH), jnp.int32)
    shapes = jax.eval_shape(lambda: CLIPTextModel(config).init(jax.random.key(0), ids))["params"]
    assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(np.shape, params)


def test_sd15_layout_matches_transformers():
    """Full-size CLIP ViT-L/14 text tower: same tensors as transformers' (meta device), 123.06M params."""
    with torch.device("meta"):
        sd = _with_prefix(_build_torch_model(SD15_TEXT).state_dict())
    expected = {}
    for key, t in sd.items():
        path = torch_key_to_flax(key, t.ndim)
        expected[path] = torch_tensor_to_flax(path, np.broadcast_to(np.float32(0), tuple(t.shape))).shape
    ids = jnp.zeros((1, LENGTH), jnp.int32)
    shapes = jax.eval_shape(lambda: CLIPTextModel(SD15_TEXT).init(jax.random.key(0), ids))["params"]
    assert jax.tree.map(lambda x: x.shape, shapes) == unflatten(expected)
    assert sum(int(np.prod(s)) for s in expected.values()) == 123_060_480


def test_matches_transformers(case):
    config, _, params, ids, ref = case
    out = jax.jit(CLIPTextModel(config).apply)({"params": params}, jnp.asarray(ids, jnp.int32))
    err_hidden = rel_err(out.last_hidden_state, ref.last_hidden_state.numpy())
    err_pooled = rel_err(out.pooler_output, ref.pooler_output.numpy())
    print(f"hidden {err_hidden:.2e} pooled {err_pooled:.2e}")
    assert err_hidden <= 1e-4 and err_pooled <= 1e-4, (err_hidden, err_pooled)


def test_clip_skip_matches_diffusers_rule(case):
    config, model, params, ids, ref = case
    for clip_skip in range(1, config.num_hidden_layers):
        # diffusers encode_prompt: final_layer_norm(hidden_states[-(clip_skip + 1)]).
        with torch.no_grad():
            expected = model.final_layer_norm(ref.hidden_states[-(clip_skip + 1)]).numpy()
        out = CLIPTextModel(config).apply({"params": params}, jnp.asarray(ids, jnp.int32), clip_skip=clip_skip)
        assert rel_err(out.last_hidden_state, expected) <= 1e-4, clip_skip


def test_attention_mask_matches_transformers(case):
    config, model, params, ids, _ = case
    mask = np.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        mask[i, :n + 2] = 1  # bos + words + end-of-text
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    out = CLIPTextModel(config).apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask))
    assert rel_err(out.last_hidden_state, ref) <= 1e-4


def test_bfloat16_close_to_float32(case):
    config, _, params, ids, _ = case
    ids = jnp.asarray(ids, jnp.int32)
    out32 = CLIPTextModel(config).apply({"params": params}, ids).last_hidden_state
    out16 = CLIPTextModel(config, dtype=jnp.bfloat16).apply({"params": params}, ids).last_hidden_state
    assert out16.dtype == jnp.bfloat16
    err = rel_err(out16.astype(jnp.float32), out32)
    print(f"bf16 {err:.2e}")
    assert err <= 2e-2


def test_rejects_bad_inputs():
    config = CONFIGS["quick_gelu_eos"]
    model = CLIPTextModel(config)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, LENGTH + 1), jnp.int32)))
    with pytest.raises(ValueError, match="clip_skip"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), clip_skip=3))
