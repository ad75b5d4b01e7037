"""UNet3DConditionModel vs diffusers (UNetMotionModel, UNet2DConditionModel per frame), float32, CPU.

Weights go from the PyTorch modules into ours through `convert.naming.state_dict_to_flax` only.
"""
import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from animatediff_jax.models.configs import MotionConfig, UNetConfig
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.params import flatten, unflatten
from convert.naming import state_dict_to_flax
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


_COMPILED = {}
# Tiny networks: XLA's LLVM optimisations cost more compile time than they save at run time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _apply(model, params, sample, timesteps, text):
    """Jitted `model.apply`, compiled once per model configuration and input shapes."""
    key = (model, sample.shape, np.shape(timesteps), text.shape)
    if key not in _COMPILED:
        lowered = jax.jit(model.apply).lower({"params": params}, sample, timesteps, text)
        _COMPILED[key] = lowered.compile(compiler_options=_FAST_COMPILE)
    return np.asarray(_COMPILED[key]({"params": params}, sample, timesteps, text))


def _random_params(model, inputs, seed, zero_proj_out):
    """Random params of the right tree (built abstractly, filled by NumPy: no init compile)."""
    rng = np.random.RandomState(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]

    def fill(path, leaf):
        names = [p.key for p in path]
        if zero_proj_out and "proj_out" in names and any(n.startswith("motion_modules") for n in names):
            return np.zeros(leaf.shape, np.float32)
        if names[-1] == "scale":
            return (1 + 0.1 * rng.randn(*leaf.shape)).astype(np.float32)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return (rng.randn(*leaf.shape) / np.sqrt(fan_in if names[-1] == "kernel" else 50)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def v2_pair():
    """v2 layout (mid-block module), joint input norm, inputs: batch 2, 5 frames, 8x16 latent."""
    torch_model, ours = _motion_pair("two_level", True)
    sample, timesteps, text = _inputs(2, 5, 8, 16)
    return torch_model, ours, _params(torch_model), (sample, timesteps, text)


def _check_parity(torch_model, ours, params, inputs):
    sample, timesteps, text = inputs
    _same_tree(jax.eval_shape(ours.init, jax.random.PRNGKey(0), *inputs)["params"], params)
    proj_out = [v for k, v in flatten(params).items() if "motion_modules" in k[1] and k[-2] == "proj_out"]
    assert proj_out and all(np.abs(v).max() > 0 for v in proj_out)  # the motion modules are live
    want = _run_diffusers_motion(torch_model, sample, timesteps, text)
    got = _apply(ours, params, sample, timesteps, text)
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)


def test_v2_layout_matches_diffusers(v2_pair):
    _check_parity(*v2_pair)


def test_v3_layout_matches_diffusers():
    """No mid-block module, three levels, two transformer blocks per module, batch 1, 4 frames, 12x8."""
    torch_model, ours = _motion_pair("three_level", False, blocks=2)
    _check_parity(torch_model, ours, _params(torch_model), _inputs(1, 4, 12, 8))


class _PerFrameGroupNorm(torch.nn.Module):
    """The original AnimateDiff motion-module input norm: GroupNorm per frame ((b f) c h w)."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):  # (B, C, F, H, W), as AnimateDiffTransformer3D passes it
        b, c, f, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_original_per_frame_norm_matches_patched_diffusers(v2_pair):
    """input_norm='frame' equals diffusers with its motion input norms made per-frame (the original
    semantics), and is a different function of the same weights than 'joint'."""
    torch_model, ours, params, inputs = v2_pair
    patched = copy.deepcopy(torch_model)
    modules = [m for m in patched.modules() if type(m).__name__ == "AnimateDiffTransformer3D"]
    assert modules
    for m in modules:
        m.norm = _PerFrameGroupNorm(m.norm)
    frame = dataclasses.replace(ours, motion=dataclasses.replace(ours.motion, input_norm="frame"))
    got = _apply(frame, params, *inputs)
    want = _run_diffusers_motion(patched, *inputs)
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)
    assert rel_err(got, _apply(ours, params, *inputs)) > 1e-3


def _without_motion(params):
    return unflatten({k: v for k, v in flatten(params).items() if not any("motion_modules" in p for p in k)})


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
    got = _apply(ours, params, sample, timesteps, text)
    assert rel_err(got, want) <= 1e-4, rel_err(got, want)


# Small layout for the properties below (no diffusers reference needed).
ONE_LEVEL = UNetConfig(block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",),
                       up_block_types=("CrossAttnUpBlock2D",), layers_per_block=1, attention_head_dim=2,
                       cross_attention_dim=COMMON["cross_attention_dim"], norm_num_groups=4)
SMALL_MOTION = MotionConfig(num_attention_heads=2, max_seq_length=8, norm_num_groups=4)


def test_zero_initialised_motion_modules_leave_the_2d_unet_unchanged():
    """proj_out = 0 (what MotionModule.init gives: test_motion_module) => exactly the frame-wise 2D UNet."""
    sample, timesteps, text = _inputs(batch=2, frames=5, h=8, w=8, seed=2)
    video = UNet3DConditionModel(ONE_LEVEL, SMALL_MOTION)
    params = _random_params(video, (sample, timesteps, text), seed=3, zero_proj_out=True)
    got = _apply(video, params, sample, timesteps, text)
    want = _apply(UNet3DConditionModel(ONE_LEVEL, None), _without_motion(params), sample, timesteps, text)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def live_small():
    """ONE_LEVEL + motion, random weights with non-zero proj_out; batch 1, 5 frames, 8x8."""
    model = UNet3DConditionModel(ONE_LEVEL, SMALL_MOTION)
    inputs = _inputs(1, 5, 8, 8, seed=4)
    params = _random_params(model, inputs, seed=5, zero_proj_out=False)
    return model, params, inputs, _apply(model, params, *inputs)


def test_bfloat16_unet_is_not_grossly_off(live_small):
    """Guards the bf16 path end to end on the original-norm layout (see the reference comparison below)."""
    model, params, inputs, ref = live_small
    bf = _apply(dataclasses.replace(model, dtype=jnp.bfloat16), params, *inputs)
    assert np.isfinite(bf).all() and rel_err(bf, ref) < 5e-2, rel_err(bf, ref)


def test_bfloat16_unet_error_is_within_2e2_or_no_worse_than_diffusers_bf16():
    """bf16 rounds every layer's inputs and weights (~0.4% each); through a whole random-weight UNet that
    accumulates to ~2% for diffusers itself. Our bf16 output must be within 2e-2 of float32, or no
    further from it than 1.25x diffusers' own bf16 run on the same weights and inputs."""
    torch_model, ours = _motion_pair("two_level", use_mid_block=True)
    params = _params(torch_model)
    sample, timesteps, text = _inputs(2, 5, 8, 16, seed=3)
    ref = _run_diffusers_motion(torch_model, sample, timesteps, text)
    bf = _apply(dataclasses.replace(ours, dtype=jnp.bfloat16), params, sample, timesteps, text)
    torch_bf16 = copy.deepcopy(torch_model).to(torch.bfloat16)
    frames = sample.shape[1]
    with torch.no_grad():
        theirs = torch_bf16(torch.from_numpy(sample).permute(0, 4, 1, 2, 3).to(torch.bfloat16),
                            torch.from_numpy(timesteps),
                            torch.from_numpy(text).repeat_interleave(frames, dim=0).to(torch.bfloat16)).sample
    theirs = theirs.float().permute(0, 2, 3, 4, 1).numpy()
    ours_err, theirs_err = rel_err(bf, ref), rel_err(theirs, ref)
    print(f"bf16 rel err: ours {ours_err:.4f}, diffusers {theirs_err:.4f}")
    assert np.isfinite(bf).all()
    assert ours_err <= max(2e-2, 1.25 * theirs_err), (ours_err, theirs_err)


def test_chunked_attention_and_remat_give_the_same_output(live_small):
    model, params, inputs, ref = live_small
    chunked = dataclasses.replace(model, attention_impl="chunked", remat="dots_saveable")
    assert rel_err(_apply(chunked, params, *inputs), ref) < 1e-6


def test_bad_inputs_are_refused():
    model = UNet3DConditionModel(ONE_LEVEL, dataclasses.replace(SMALL_MOTION, max_seq_length=4))
    sample, timesteps, text = _inputs(1, 5, 8, 8)
    init = lambda m, *a: jax.eval_shape(m.init, jax.random.PRNGKey(0), *a)  # noqa: E731
    with pytest.raises(ValueError, match="position-encoding length"):
        init(model, sample, timesteps, text)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        init(model, sample[:, :3], timesteps, text[..., :5])
    with pytest.raises(ValueError, match="timesteps"):
        init(model, sample[:, :3], np.zeros((2, 2)), text)
    with pytest.raises(ValueError, match="unknown remat policy"):
        init(dataclasses.replace(model, remat="sometimes"), sample[:, :3], timesteps, text)
