"""Motion module vs an independent NumPy reference (original per-frame and diffusers joint input norm),
embeddings vs diffusers, and the published motion-module sizes (SD1.5, built abstractly)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, get_timestep_embedding
from scipy.special import erf

from animatediff_jax.models.configs import MOTION_V1, MOTION_V2, MOTION_V3, SD15_UNET, MotionConfig
from animatediff_jax.models.embeddings import sinusoidal_positions, timestep_embedding
from animatediff_jax.models.motion_module import MotionModule
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.params import flatten
from tests.utils import rel_err


def _np_group_norm(x, groups, eps, scale, bias, per_frame):
    """x (B, F, H, W, C). per_frame: statistics per (b, f, group); else per (b, group) over all frames."""
    b, f, h, w, c = x.shape
    xg = x.reshape(b, f, h * w, groups, c // groups)
    axes = (2, 4) if per_frame else (1, 2, 4)
    mean, var = xg.mean(axis=axes, keepdims=True), xg.var(axis=axes, keepdims=True)
    return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def _np_layer_norm(x, p, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_linear(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _np_positions(length, dim):
    pe = np.zeros((length, dim))
    for pos in range(length):
        for i in range(0, dim, 2):
            angle = pos / 10000 ** (i / dim)
            pe[pos, i], pe[pos, i + 1] = math.sin(angle), math.cos(angle)
    return pe


def _np_self_attention(x, p, heads):
    n, f, c = x.shape
    split = lambda t: t.reshape(n, f, heads, c // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(_np_linear(x, p[name])) for name in ("to_q", "to_k", "to_v"))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(c // heads)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return _np_linear((a @ v).transpose(0, 2, 1, 3).reshape(n, f, c), p["to_out_0"])


def _np_motion_module(x, p, cfg: MotionConfig):
    """The paper's module written out: per-pixel sequences over frames, [LN, +PE, self-attn] x2, LN, GEGLU."""
    b, f, h, w, c = x.shape
    hid = _np_group_norm(x, cfg.norm_num_groups, cfg.norm_eps, p["norm"]["scale"], p["norm"]["bias"],
                         per_frame=cfg.input_norm == "frame")
    hid = _np_linear(hid.transpose(0, 2, 3, 1, 4).reshape(b * h * w, f, c), p["proj_in"])
    pe = _np_positions(cfg.max_seq_length, c)[:f]
    for i in range(cfg.num_transformer_blocks):
        blk = p[f"transformer_blocks_{i}"]
        for j in (1, 2):
            hid = hid + _np_self_attention(_np_layer_norm(hid, blk[f"norm{j}"]) + pe, blk[f"attn{j}"],
                                           cfg.num_attention_heads)
        value, gate = np.split(_np_linear(_np_layer_norm(hid, blk["norm3"]), blk["ff"]["net_0"]["proj"]), 2, -1)
        hid = hid + _np_linear(value * 0.5 * gate * (1 + erf(gate / math.sqrt(2))), blk["ff"]["net_2"])
    hid = _np_linear(hid, p["proj_out"])
    return x + hid.reshape(b, h, w, f, c).transpose(0, 3, 1, 2, 4)


@pytest.mark.parametrize("input_norm", ["frame", "joint"])
def test_motion_module_matches_numpy_reference(input_norm):
    cfg = MotionConfig(num_attention_heads=2, num_transformer_blocks=2, max_seq_length=7, norm_num_groups=4,
                       input_norm=input_norm, zero_init_proj_out=False)
    rng = np.random.RandomState(0)
    # Frames with different offsets/scales, so per-frame and joint statistics really differ.
    x = (rng.randn(2, 5, 3, 4, 16) * np.linspace(0.5, 2.0, 5)[None, :, None, None, None]
         + np.arange(5)[None, :, None, None, None]).astype(np.float32)
    module = MotionModule(cfg)
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    params = jax.tree.map(lambda v: np.asarray(v) + 0.05 * rng.randn(*v.shape).astype(np.float32), params)
    got = jax.jit(module.apply)({"params": params}, x)
    p64 = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    want = _np_motion_module(x.astype(np.float64), p64, cfg)
    assert rel_err(got, want) < 1e-5, rel_err(got, want)
    other = "joint" if input_norm == "frame" else "frame"
    assert rel_err(want, _np_motion_module(x.astype(np.float64), p64, MotionConfig(
        **{**cfg.__dict__, "input_norm": other}))) > 1e-2


def test_motion_module_bfloat16_close_to_float32():
    """Compared on the module's own contribution (output - input), not hidden behind the residual."""
    cfg = MotionConfig(num_attention_heads=2, max_seq_length=16, norm_num_groups=4, zero_init_proj_out=False)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 4, 4, 32)).astype(jnp.bfloat16)
    x32 = x.astype(jnp.float32)
    params = MotionModule(cfg).init(jax.random.PRNGKey(3), x32)["params"]
    ref = jax.jit(MotionModule(cfg).apply)({"params": params}, x32)
    bf = jax.jit(MotionModule(cfg, dtype=jnp.bfloat16).apply)({"params": params}, x)
    assert bf.dtype == jnp.bfloat16
    err = rel_err(bf.astype(jnp.float32) - x32, ref - x32)
    assert err < 2e-2, err


def test_motion_module_starts_as_identity_and_has_no_position_params():
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 2, 2, 16))
    module = MotionModule(MotionConfig(num_attention_heads=2, norm_num_groups=4))
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    assert not any("pos" in "/".join(k) or "pe" == k[-1] for k in flatten(params))
    assert np.abs(params["proj_out"]["kernel"]).max() == 0
    np.testing.assert_array_equal(module.apply({"params": params}, x), x)


def test_positions_match_diffusers_buffer():
    ref = SinusoidalPositionalEmbedding(40, max_seq_length=24).pe[0].numpy()
    assert rel_err(sinusoidal_positions(24, 40), ref) < 1e-6


@pytest.mark.parametrize("flip,shift,dim", [(True, 0, 32), (False, 1, 33)])
def test_timestep_embedding_matches_diffusers(flip, shift, dim):
    t = np.array([0, 1, 17, 500, 999])
    want = get_timestep_embedding(torch.from_numpy(t), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    # float32 sin/cos of arguments up to 999 carry ~999 * 2**-24 absolute rounding in either library.
    assert rel_err(timestep_embedding(jnp.asarray(t), dim, flip, shift), want.numpy()) < 2e-5


def _motion_param_count(motion):
    shapes = jax.eval_shape(UNet3DConditionModel(SD15_UNET, motion).init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 2, 8, 8, 4), jnp.float32), jnp.zeros(()),
                            jax.ShapeDtypeStruct((1, 77, 768), jnp.float32))["params"]
    return sum(math.prod(v.shape) for k, v in flatten(shapes).items() if any("motion_modules" in p for p in k))


def test_sd15_motion_module_sizes_match_published():
    """mm_sd_v14 (v1) ~417M and mm_sd_v15_v2 ~453M parameters; v3 has v1's layout."""
    v1, v2 = _motion_param_count(MOTION_V1), _motion_param_count(MOTION_V2)
    assert v1 == 417_137_600, v1
    assert v2 == 453_209_280, v2
    assert _motion_param_count(MOTION_V3) == v1
