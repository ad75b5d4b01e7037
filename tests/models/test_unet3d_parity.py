"""UNet3DConditionModel vs diffusers (UNetMotionModel, UNet2DConditionModel per frame), float32, CPU.

Weights go from the PyTorch modules into ours through `convert.naming.state_dict_to_flax` only.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from animatediff_jax.models.configs import MotionConfig, UNetConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from convert.naming import flatten, state_dict_to_flax
from tests.utils import rel_err

# Two block layouts: attention first (SD-like, reversed up blocks) and attention last, 3 levels.
LAYOUTS = {
    "two_level": dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                      attention_head_dim=2),
    "three_level": dict(block_out_channels=(16, 32, 32),
                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                        layers_per_block=2, attention_head_dim=(1, 2, 4)),
}
COMMON = dict(in_channels=4, out_channels=4, cross_attention_dim=24, norm_num_groups=8, sample_size=8)


def _torch_unet2d(layout):
    cfg = dict(COMMON, **LAYOUTS[layout])
    return UNet2DConditionModel(**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}), cfg


def _our_config(cfg) -> UNetConfig:
    return UNetConfig.from_dict(cfg)


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.02 if name.endswith("bias") else 1.0 / max(1, p[0].numel()) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("norm.weight") else 0.0))
    return module.eval()


def _params(module):
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    return state_dict_to_flax(sd, skip=[r"pos_embed\.pe$"])


def _inputs(batch=2, frames=5, h=8, w=16, seed=0):
    rng = np.random.RandomState(seed)
    sample = rng.randn(batch, frames, h, w, 4).astype(np.float32)
    text = rng.randn(batch, 7, COMMON["cross_attention_dim"]).astype(np.float32)
    timesteps = np.array([999, 17][:batch], np.int64)
    return sample, timesteps, text


def _same_tree(ours, theirs):
    ours = {k: v.shape for k, v in flatten(ours).items()}
    theirs = {k: v.shape for k, v in flatten(theirs).items()}
    assert ours == theirs, (sorted(set(ours) ^ set(theirs))[:10],
                            [k for k in ours if k in theirs and ours[k] != theirs[k]][:10])


def _run_diffusers_motion(model, sample, timesteps, text):
    frames = sample.shape[1]
    with torch.no_grad():
        out = model(torch.from_numpy(sample).permute(0, 4, 1, 2, 3), torch.from_numpy(timesteps),
                    torch.from_numpy(text).repeat_interleave(frames, dim=0)).sample
    return out.permute(0, 2, 3, 4, 1).numpy()  # (B, C, F, H, W) -> (B, F, H, W, C)


def _motion_pair(layout, use_mid_block, max_seq_length=8, blocks=1):
    unet2d, cfg = _torch_unet2d(layout)
    adapter = MotionAdapter(block_out_channels=list(cfg["block_out_channels"]),
                            motion_layers_per_block=cfg["layers_per_block"], motion_num_attention_heads=2,
                            motion_norm_num_groups=8, motion_max_seq_length=max_seq_length,
                            motion_transformer_layers_per_block=blocks, use_motion_mid_block=use_mid_block)
    model = _randomise(UNetMotionModel.from_unet2d(unet2d, adapter))  # proj_out randomised too
    motion = MotionConfig(num_attention_heads=2, num_transformer_blocks=blocks, max_seq_length=max_seq_length,
                          use_mid_block=use_mid_block, norm_num_groups=8, input_norm="joint")
    return model, UNet3DConditionModel(_our_config(cfg), motion)


@pytest.mark.parametrize("layout,use_mid_block,batch,frames,h,w", [
    ("two_level", True, 2, 5, 8, 16),      # v2 layout: mid-block module; odd frames, non-square
    ("three_level", False, 1, 4, 12, 8),   # v3 layout: no mid-block module
])
def test_motion_unet_matches_diffusers(layout, use_mid_block, batch, frames, h, w):
    torch_model, ours = _motion_pair(layout, use_mid_block)
    params = _params(torch_model)
    sample, timesteps, text = _inputs(batch, frames, h, w)
    _same_tree(jax.eval_shape(ours.init, jax.random.PRNGKey(0), sample, timesteps, text)["params"], params)
    want = _run_diffusers_motion(torch_model, sample, timesteps, text)
    got = jax.jit(ours.apply)({"params": params}, sample, timesteps, text)
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)
    # The motion modules matter: without them the output is far away.
    frame_wise = dataclasses.replace(ours, motion=None)
    params_2d = {k: v for k, v in params.items()}
    assert rel_err(_apply_without_motion(frame_wise, params_2d, sample, timesteps, text), want) > 1e-2


def _apply_without_motion(model, params, sample, timesteps, text):
    flat = {k: v for k, v in flatten(params).items() if not any(p.startswith("motion_modules") for p in k)}
    from convert.naming import unflatten
    return model.apply({"params": unflatten(flat)}, sample, timesteps, text)


def test_original_per_frame_norm_differs_from_joint():
    """input_norm='frame' (original) is a different function of the same weights than 'joint'."""
    torch_model, ours = _motion_pair("two_level", True)
    params = _params(torch_model)
    sample, timesteps, text = _inputs(2, 5, 8, 8)
    joint = ours.apply({"params": params}, sample, timesteps, text)
    frame = dataclasses.replace(ours, motion=dataclasses.replace(ours.motion, input_norm="frame")).apply(
        {"params": params}, sample, timesteps, text)
    assert rel_err(frame, joint) > 1e-3


def test_frame_wise_unet_matches_unet2d_per_frame():
    unet2d, cfg = _torch_unet2d("three_level")
    unet2d = _randomise(unet2d, seed=1)
    sample, timesteps, text = _inputs(batch=2, frames=3, h=8, w=12, seed=1)
    b, f = sample.shape[:2]
    with torch.no_grad():
        want = unet2d(torch.from_numpy(sample.reshape(b * f, *sample.shape[2:])).permute(0, 3, 1, 2),
                      torch.from_numpy(timesteps).repeat_interleave(f),
                      torch.from_numpy(text).repeat_interleave(f, dim=0)).sample
    want = want.permute(0, 2, 3, 1).numpy().reshape(sample.shape)
    ours = UNet3DConditionModel(_our_config(cfg), motion=None)
    params = _params(unet2d)
    _same_tree(jax.eval_shape(ours.init, jax.random.PRNGKey(0), sample, timesteps, text)["params"], params)
    got = jax.jit(ours.apply)({"params": params}, sample, timesteps, text)
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)


def test_zero_initialised_motion_modules_leave_the_2d_unet_unchanged():
    cfg = _our_config(dict(COMMON, **LAYOUTS["two_level"]))
    motion = MotionConfig(num_attention_heads=2, max_seq_length=8, norm_num_groups=4)
    sample, timesteps, text = _inputs(batch=2, frames=5, h=8, w=8, seed=2)
    video = UNet3DConditionModel(cfg, motion)
    params = video.init(jax.random.PRNGKey(3), sample, timesteps, text)["params"]
    got = video.apply({"params": params}, sample, timesteps, text)
    want = _apply_without_motion(UNet3DConditionModel(cfg, None), params, sample, timesteps, text)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_bfloat16_compute_close_to_float32():
    torch_model, ours = _motion_pair("two_level", True)
    params = _params(torch_model)
    sample, timesteps, text = _inputs(1, 5, 8, 8)
    ref = ours.apply({"params": params}, sample, timesteps, text)
    bf = dataclasses.replace(ours, dtype=jnp.bfloat16).apply({"params": params}, sample, timesteps, text)
    assert rel_err(bf, ref) < 2e-2, rel_err(bf, ref)


def test_chunked_attention_and_remat_give_the_same_output():
    torch_model, ours = _motion_pair("two_level", True)
    params = {"params": _params(torch_model)}
    sample, timesteps, text = _inputs(1, 3, 8, 8)
    ref = ours.apply(params, sample, timesteps, text)
    chunked = dataclasses.replace(ours, attention_impl="chunked", remat="dots_saveable")
    assert rel_err(chunked.apply(params, sample, timesteps, text), ref) < 1e-6


def test_bad_inputs_are_refused():
    cfg = _our_config(dict(COMMON, **LAYOUTS["two_level"]))
    model = UNet3DConditionModel(cfg, MotionConfig(num_attention_heads=2, max_seq_length=4, norm_num_groups=4))
    sample, timesteps, text = _inputs(1, 5, 8, 8)
    with pytest.raises(ValueError, match="position-encoding length"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), sample, timesteps, text)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), sample[:, :3], timesteps, text[..., :5])
    with pytest.raises(ValueError, match="unknown remat policy"):
        jax.eval_shape(dataclasses.replace(model, remat="sometimes").init, jax.random.PRNGKey(0),
                       sample[:, :3], timesteps, text)
