"""ControlNetModel / SparseControlNetModel vs diffusers' ControlNetModel / SparseControlNetModel, and the
UNet's residual inputs vs diffusers' UNetMotionModel; float32, CPU, tiny random-weight networks.

Weights go from the PyTorch modules into ours through `convert.naming.state_dict_to_flax` only.
"""
import dataclasses

import jax
import numpy as np
import pytest
import torch
from diffusers import ControlNetModel as TorchControlNet
from diffusers import SparseControlNetModel as TorchSparseControlNet

from animatediff_jax.models.configs import (MOTION_SPARSECTRL, SD15_CONTROLNET, SPARSECTRL_RGB, SPARSECTRL_SCRIBBLE,
                                            ControlNetConfig, sparsectrl_motion_config)
from animatediff_jax.models.controlnet import ControlNetModel, SparseControlNetModel
from animatediff_jax.params import flatten, torch_key_to_flax
from tests.models.test_unet3d_parity import (_FAST_COMPILE, _inputs, _motion_pair, _params, _randomise,
                                             _run_diffusers_motion, _same_tree)
from convert.naming import torch_tensor_to_flax
from tests.utils import rel_err

TEXT_DIM = 24
# Two layouts each: attention first, 2 levels, conv projections; attention last, 3 levels, linear
# projections, per-block heads. ControlNet: 2x (RGB) resp. 8x (1-channel, BGR order) condition
# embedding. SparseCtrl: v3 RGB-like (4 latent channels + mask, simplified embedding at latent size) and
# scribble-like (3 channels + mask, full 4x embedding, two temporal transformer blocks).
CONTROLNETS = {
    "two_level_rgb": dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                          layers_per_block=1, attention_head_dim=2, conditioning_channels=3,
                          conditioning_embedding_out_channels=[8, 16]),
    "three_level_linear_bgr": dict(block_out_channels=[16, 32, 32],
                                   down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                   layers_per_block=2, attention_head_dim=[1, 2, 4], use_linear_projection=True,
                                   conditioning_channels=1, conditioning_embedding_out_channels=[4, 8, 8, 16],
                                   controlnet_conditioning_channel_order="bgr"),
}
SPARSE = {
    "rgb_latent": dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlockMotion", "DownBlockMotion"],
                       layers_per_block=1, attention_head_dim=2, conditioning_channels=4,
                       use_simplified_condition_embedding=True, motion_num_attention_heads=2, motion_max_seq_length=8),
    "scribble_linear": dict(block_out_channels=[16, 32, 32],
                            down_block_types=["DownBlockMotion"] + ["CrossAttnDownBlockMotion"] * 2,
                            layers_per_block=1, attention_head_dim=[1, 2, 4], use_linear_projection=True,
                            conditioning_channels=3, use_simplified_condition_embedding=False,
                            conditioning_embedding_out_channels=[4, 8, 8], motion_num_attention_heads=4,
                            temporal_transformer_layers_per_block=2, motion_max_seq_length=8),
}
COMMON = dict(in_channels=4, cross_attention_dim=TEXT_DIM, norm_num_groups=8)
SPARSE_SCALE = 1.3  # conditioning_scale of every SparseControlNet run (one compiled program per network)

_COMPILED = {}


def _apply(model, params, *args, **static):
    """Jitted `model.apply` (float32), compiled once per model, input shapes and static kwargs."""
    key = (model, tuple(np.shape(a) for a in args), tuple(sorted(static.items())))
    if key not in _COMPILED:
        fn = jax.jit(lambda p, *a: model.apply({"params": p}, *a, **static))
        _COMPILED[key] = fn.lower(params, *args).compile(compiler_options=_FAST_COMPILE)
    down, mid = _COMPILED[key](params, *args)
    return [np.asarray(d) for d in down], np.asarray(mid)


def _torch_config(name):
    return {**COMMON, **(CONTROLNETS[name] if name in CONTROLNETS else SPARSE[name])}


def _condition(cfg: ControlNetConfig, b, f, h, w, seed):
    s = cfg.condition_downsample_factor()
    return np.random.RandomState(seed).rand(b, f, h * s, w * s, cfg.conditioning_channels).astype(np.float32)


def _to_torch_frames(x):
    """(B, F, H, W, C) -> (B*F, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(x.reshape(-1, *x.shape[2:]).transpose(0, 3, 1, 2)))


def _from_torch_frames(t, b):
    """(B*F, C, H, W) -> (B, F, H, W, C)."""
    a = t.detach().numpy().transpose(0, 2, 3, 1)
    return a.reshape(b, -1, *a.shape[1:])


def _run_torch(model, sample, timesteps, text, cond, mask=None, scale=1.0, guess_mode=False):
    b, f = sample.shape[:2]
    kw = dict(conditioning_scale=scale, guess_mode=guess_mode, return_dict=False)
    with torch.no_grad():
        if mask is None:  # ControlNetModel: the frames as a batch of images
            down, mid = model(_to_torch_frames(sample), torch.from_numpy(timesteps).repeat_interleave(f),
                              torch.from_numpy(text).repeat_interleave(f, dim=0), _to_torch_frames(cond), **kw)
        else:  # SparseControlNetModel: (B, C, F, H, W) video, text per frame
            video = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))  # noqa: E731
            m = np.broadcast_to(mask[:, :, None, None, None], (*cond.shape[:-1], 1))
            down, mid = model(video(sample), torch.from_numpy(timesteps),
                              torch.from_numpy(text).repeat_interleave(f, dim=0), video(cond),
                              conditioning_mask=video(m), **kw)
    return [_from_torch_frames(d, b) for d in down], _from_torch_frames(mid, b)


def _assert_close(got, want, tol=1e-5):
    (gd, gm), (wd, wm) = got, want
    assert len(gd) == len(wd), (len(gd), len(wd))
    errs = [rel_err(g, w) for g, w in zip(gd + [gm], wd + [wm])]
    assert all(np.abs(w).max() > 0 for w in wd + [wm])  # zero convs randomised: every residual is live
    assert max(errs) <= tol, errs


@pytest.fixture(scope="module", params=sorted(CONTROLNETS))
def controlnet_pair(request):
    tcfg = _torch_config(request.param)
    torch_model = _randomise(TorchControlNet(**tcfg), seed=1)
    ours = ControlNetModel(ControlNetConfig.from_dict({"_class_name": "ControlNetModel", **tcfg}))
    sample, timesteps, text = _inputs(2, 3, 8, 8, seed=2)
    cond = _condition(ours.config, 2, 3, 8, 8, seed=3)
    return torch_model, ours, _params(torch_model), (sample, timesteps, text, cond)


def test_controlnet_matches_diffusers(controlnet_pair):
    torch_model, ours, params, inputs = controlnet_pair
    _same_tree(jax.eval_shape(ours.init, jax.random.PRNGKey(0), *inputs)["params"], params)
    _assert_close(_apply(ours, params, *inputs, 0.7), _run_torch(torch_model, *inputs, scale=0.7))


@pytest.mark.parametrize("controlnet_pair", ["two_level_rgb"], indirect=True)
def test_controlnet_guess_mode_matches_diffusers(controlnet_pair):
    torch_model, ours, params, inputs = controlnet_pair
    _assert_close(_apply(ours, params, *inputs, 0.7, guess_mode=True),
                  _run_torch(torch_model, *inputs, scale=0.7, guess_mode=True))


def test_global_pool_conditions_matches_diffusers():
    """Shuffle-style ControlNet: residuals are spatial means (B, F, 1, 1, C)."""
    tcfg = {**_torch_config("two_level_rgb"), "global_pool_conditions": True}
    torch_model = _randomise(TorchControlNet(**tcfg), seed=4)
    ours = ControlNetModel(ControlNetConfig.from_dict(tcfg))
    sample, timesteps, text = _inputs(1, 2, 8, 8, seed=5)
    inputs = (sample, timesteps, text, _condition(ours.config, 1, 2, 8, 8, seed=6))
    got = _apply(ours, _params(torch_model), *inputs)
    assert got[1].shape == (1, 2, 1, 1, 64)
    _assert_close(got, _run_torch(torch_model, *inputs))


def _sparse_pair(name, seed=7):
    tcfg = _torch_config(name)
    torch_model = _randomise(TorchSparseControlNet(**tcfg), seed=seed)
    d = {"_class_name": "SparseControlNetModel", **tcfg}
    ours = SparseControlNetModel(ControlNetConfig.from_dict(d), sparsectrl_motion_config(d, input_norm="joint"))
    return torch_model, ours, _params(torch_model)


@pytest.fixture(scope="module", params=sorted(SPARSE))
def sparse_pair(request):
    torch_model, ours, params = _sparse_pair(request.param)
    sample, timesteps, text = _inputs(2, 5, 8, 8, seed=8)
    mask = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)
    cond = _condition(ours.config, 2, 5, 8, 8, seed=9) * mask[:, :, None, None, None]
    return torch_model, ours, params, (sample, timesteps, text, cond, mask)


def test_sparse_controlnet_matches_diffusers(sparse_pair):
    torch_model, ours, params, inputs = sparse_pair
    _same_tree(jax.eval_shape(ours.init, jax.random.PRNGKey(0), *inputs)["params"], params)
    motion = [k for k in flatten(params) if any(p.startswith("motion_modules") for p in k)]
    assert motion and not any("attn2" in k for k in motion)  # one temporal self-attention per block
    _assert_close(_apply(ours, params, *inputs, SPARSE_SCALE), _run_torch(torch_model, *inputs, scale=SPARSE_SCALE))


def _strip_motion(tree):
    return {k: _strip_motion(v) for k, v in tree.items() if not k.startswith("motion_modules")} \
        if isinstance(tree, dict) else tree


@pytest.mark.parametrize("sparse_pair", ["rgb_latent"], indirect=True)
def test_sparse_motion_scale_zero_is_the_frame_wise_encoder(sparse_pair):
    """motion_scale 0 == the same encoder without motion modules (motion=None: each frame alone), which
    the temporal one differs from."""
    _, ours, params, inputs = sparse_pair
    want = _apply(dataclasses.replace(ours, motion=None), _strip_motion(params), *inputs, SPARSE_SCALE)
    off = _apply(dataclasses.replace(ours, motion_scale=0.0), params, *inputs, SPARSE_SCALE)
    on = _apply(ours, params, *inputs, SPARSE_SCALE)
    for g, w in zip(off[0] + [off[1]], want[0] + [want[1]]):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max())
    assert max(rel_err(a, b) for a, b in zip(on[0] + [on[1]], want[0] + [want[1]])) > 1e-3


@pytest.mark.parametrize("sparse_pair", ["rgb_latent"], indirect=True)
def test_sparse_noisy_sample_is_ignored_unless_configured(sparse_pair):
    """set_noisy_sample_input_to_zero (diffusers: always): the sample does not matter; without it it does."""
    _, ours, params, (sample, *rest) = sparse_pair
    a, b = _apply(ours, params, sample, *rest, SPARSE_SCALE), _apply(ours, params, sample + 1.0, *rest, SPARSE_SCALE)
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + [a[1]], b[0] + [b[1]]))
    live = dataclasses.replace(ours, config=dataclasses.replace(ours.config, set_noisy_sample_input_to_zero=False))
    c, d = _apply(live, params, sample, *rest, SPARSE_SCALE), _apply(live, params, sample + 1.0, *rest, SPARSE_SCALE)
    assert rel_err(c[1], d[1]) > 1e-3


def _residual_shapes(unet_cfg, sample, timesteps, text):
    """Shapes of the skips and mid output of `unet_cfg`'s down path: a ControlNet of the same layout's."""
    cfg = ControlNetConfig(**{k: getattr(unet_cfg, k) for k in (
        "in_channels", "block_out_channels", "down_block_types", "layers_per_block", "attention_head_dim",
        "cross_attention_dim", "norm_num_groups", "use_linear_projection")}, conditioning_embedding_out_channels=(4,))
    cond = np.zeros((*sample.shape[:-1], cfg.conditioning_channels), np.float32)
    down, mid = jax.eval_shape(lambda: ControlNetModel(cfg).init_with_output(
        jax.random.PRNGKey(0), sample, timesteps, text, cond)[0])
    return [d.shape for d in down], mid.shape


def test_unet_residuals_match_diffusers_unet_motion_model():
    """The same residuals (one of them spatially pooled, as global_pool_conditions gives) added by ours
    and by diffusers' UNetMotionModel. (Residuals None: the unchanged path, covered by test_unet3d_parity.)"""
    torch_model, ours = _motion_pair("two_level", use_mid_block=True)
    params = _params(torch_model)
    sample, timesteps, text = _inputs(1, 3, 8, 8, seed=10)
    down_shapes, mid_shape = _residual_shapes(ours.config, sample, timesteps, text)
    rng = np.random.RandomState(11)
    down = [rng.randn(*s).astype(np.float32) for s in down_shapes]
    down[-1] = down[-1].mean(axis=(2, 3), keepdims=True)
    mid = rng.randn(*mid_shape).astype(np.float32)
    f = sample.shape[1]
    with torch.no_grad():
        want = torch_model(torch.from_numpy(sample).permute(0, 4, 1, 2, 3), torch.from_numpy(timesteps),
                           torch.from_numpy(text).repeat_interleave(f, dim=0),
                           down_block_additional_residuals=[_to_torch_frames(d) for d in down],
                           mid_block_additional_residual=_to_torch_frames(mid)).sample
    want = want.permute(0, 2, 3, 4, 1).numpy()
    args = (sample, timesteps, text, down, mid)
    fn = jax.jit(lambda p, *a: ours.apply({"params": p}, *a))
    got = np.asarray(fn.lower(params, *args).compile(compiler_options=_FAST_COMPILE)(params, *args))
    plain = _run_diffusers_motion(torch_model, sample, timesteps, text)
    assert rel_err(want, plain) > 1e-2  # the residuals matter
    assert rel_err(got, want) <= 1e-5, rel_err(got, want)


def test_wrong_residuals_are_refused():
    _, ours = _motion_pair("two_level", use_mid_block=True)
    sample, timesteps, text = _inputs(1, 2, 8, 8)
    down_shapes, mid_shape = _residual_shapes(ours.config, sample, timesteps, text)
    down = [np.zeros(s, np.float32) for s in down_shapes]
    init = lambda *a: jax.eval_shape(ours.init, jax.random.PRNGKey(0), sample, timesteps, text, *a)  # noqa: E731
    with pytest.raises(ValueError, match=r"down_block_additional_residuals: expected 4 tensor\(s\)"):
        init(down[:-1], None)
    with pytest.raises(ValueError, match=r"mid_block_additional_residual: expected 1 tensor\(s\) shaped "
                                         r"\[\(1, 2, 4, 4, 64\)\]"):
        init(down, np.zeros((1, 2, 8, 8, 64), np.float32))


def test_wrong_condition_shapes_are_refused():
    """Wrong control image size or frame count, a missing/wrong mask, a SparseCtrl config given to the
    2D ControlNet: one ValueError naming the expected shape, before anything compiles."""
    cfg = ControlNetConfig.from_dict(_torch_config("two_level_rgb"))
    sample, timesteps, text = _inputs(2, 3, 8, 8)
    cond = _condition(cfg, 2, 3, 8, 8, seed=0)
    init = lambda m, *a: jax.eval_shape(m.init, jax.random.PRNGKey(0), sample, timesteps, text, *a)  # noqa: E731
    init(ControlNetModel(cfg), cond)
    expected = r"controlnet_cond: expected shape .* = \(2, 3, 16, 16, 3\) \(pixel \(2 x the latent 8x8\) size"
    with pytest.raises(ValueError, match=expected):
        init(ControlNetModel(cfg), cond[:, :, :8, :8])
    with pytest.raises(ValueError, match=expected + r".*got \(2, 2, 16, 16, 3\)"):
        init(ControlNetModel(cfg), cond[:, :2])
    with pytest.raises(ValueError, match="use SparseControlNetModel"):
        init(ControlNetModel(dataclasses.replace(cfg, concat_conditioning_mask=True)), cond)
    d = {"_class_name": "SparseControlNetModel", **_torch_config("rgb_latent")}
    sparse = SparseControlNetModel(ControlNetConfig.from_dict(d), sparsectrl_motion_config(d))
    latent_cond = _condition(sparse.config, 2, 3, 8, 8, seed=0)
    mask = np.ones((2, 3), np.float32)
    init(sparse, latent_cond, mask)
    with pytest.raises(ValueError, match=r"= \(2, 3, 8, 8, 4\) \(latent size"):
        init(sparse, _condition(sparse.config, 2, 3, 8, 8, seed=0)[..., :3], mask)
    with pytest.raises(ValueError, match=r"conditioning_mask: expected shape \(batch, frames\) = \(2, 3\)"):
        init(sparse, latent_cond, mask[:, :2])
    with pytest.raises(ValueError, match=r"conditioning_mask: .* got None"):
        init(sparse, latent_cond)


def test_config_from_diffusers_dicts():
    """ControlNetConfig.from_dict reads diffusers' config.json of both classes, with each class's
    defaults, and refuses SDXL-only settings by key."""
    for cls, name in ((TorchControlNet, "two_level_rgb"), (TorchSparseControlNet, "rgb_latent")):
        d = dict(cls(**_torch_config(name)).config)  # what config.json holds, _class_name included
        cfg = ControlNetConfig.from_dict({**d, "_class_name": cls.__name__})
        assert cfg.block_out_channels == tuple(d["block_out_channels"])
        assert cfg.conditioning_channels == d["conditioning_channels"]
        assert cfg.use_simplified_condition_embedding == d.get("use_simplified_condition_embedding", False)
    assert ControlNetConfig.from_dict({"_class_name": "SparseControlNetModel"}).set_noisy_sample_input_to_zero
    assert ControlNetConfig.from_dict({"concate_conditioning_mask": True}).concat_conditioning_mask  # original key
    with pytest.raises(ValueError, match="addition_embed_type='text_time' is not supported"):
        ControlNetConfig.from_dict({"addition_embed_type": "text_time"})
    with pytest.raises(ValueError, match="transformer_layers_per_block"):
        ControlNetConfig.from_dict({"transformer_layers_per_block": [1, 2, 10]})


def _torch_shapes(model) -> dict:
    """Flax path -> shape of a (meta-device) diffusers model's state dict, renamed as the converters do."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("pos_embed.pe"):
            continue
        view = np.broadcast_to(np.float32(0), tuple(value.shape))  # no memory: only the layout change matters
        path = torch_key_to_flax(key, view.ndim)
        out[path] = torch_tensor_to_flax(path, view).shape
    return out


@pytest.mark.parametrize("kind", ["controlnet", "sparsectrl_rgb", "sparsectrl_scribble"])
def test_full_size_parameter_shapes_match_diffusers(kind):
    """SD15_CONTROLNET / SPARSECTRL_RGB / SPARSECTRL_SCRIBBLE (+ MOTION_SPARSECTRL) have exactly the
    parameters of diffusers' full-size models (built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        if kind == "controlnet":
            torch_model, ours = TorchControlNet(cross_attention_dim=768), ControlNetModel(SD15_CONTROLNET)
        else:
            rgb = kind == "sparsectrl_rgb"
            torch_model = TorchSparseControlNet(conditioning_channels=4 if rgb else 3,
                                                use_simplified_condition_embedding=rgb)
            ours = SparseControlNetModel(SPARSECTRL_RGB if rgb else SPARSECTRL_SCRIBBLE, MOTION_SPARSECTRL)
    cfg = ours.config
    s = cfg.condition_downsample_factor()
    inputs = [np.zeros((1, 2, 8, 8, 4), np.float32), np.zeros((1,), np.int32), np.zeros((1, 77, 768), np.float32),
              np.zeros((1, 2, 8 * s, 8 * s, cfg.conditioning_channels), np.float32)]
    if kind != "controlnet":
        inputs.append(np.ones((1, 2), np.float32))
    params = jax.eval_shape(ours.init, jax.random.PRNGKey(0), *inputs)["params"]
    assert {k: v.shape for k, v in flatten(params).items()} == _torch_shapes(torch_model)
