"""ResnetBlock2D / samplers vs diffusers; the v1 joint (all-frame) GroupNorm vs a NumPy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.resnet import Downsample2D as TDown
from diffusers.models.resnet import ResnetBlock2D as TResnet
from diffusers.models.resnet import Upsample2D as TUp

from animatediff_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D, group_norm
from convert.naming import state_dict_to_flax
from tests.utils import rel_err


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module.eval()


def _params(module):
    return state_dict_to_flax({k: v.numpy() for k, v in module.state_dict().items()})


def _nchw(x):
    return torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("cin,cout,temb", [(8, 16, 12), (16, 16, None)])
def test_resnet_matches_diffusers(cin, cout, temb):
    ref = _randomise(TResnet(in_channels=cin, out_channels=cout, temb_channels=temb, groups=4, eps=1e-6,
                             output_scale_factor=2.0))
    x = np.random.RandomState(0).randn(3, 6, 5, cin).astype(np.float32)
    t = np.random.RandomState(1).randn(3, temb).astype(np.float32) if temb else None
    with torch.no_grad():
        want = ref(_nchw(x), torch.from_numpy(t) if temb else None).permute(0, 2, 3, 1).numpy()
    ours = ResnetBlock2D(cout, groups=4, eps=1e-6, temb_channels=temb, output_scale_factor=2.0)
    got = ours.apply({"params": _params(ref)}, jnp.asarray(x), None if t is None else jnp.asarray(t))
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("padding", [1, 0])
def test_downsample_matches_diffusers(padding):
    ref = _randomise(TDown(8, use_conv=True, out_channels=8, padding=padding, name="conv"))
    x = np.random.RandomState(0).randn(2, 7, 10, 8).astype(np.float32)
    with torch.no_grad():
        want = ref(_nchw(x)).permute(0, 2, 3, 1).numpy()
    got = Downsample2D(8, padding=padding).apply({"params": _params(ref)}, jnp.asarray(x))
    assert rel_err(got, want) < 1e-5


def test_upsample_matches_diffusers():
    ref = _randomise(TUp(8, use_conv=True, out_channels=8))
    x = np.random.RandomState(0).randn(2, 3, 5, 8).astype(np.float32)
    with torch.no_grad():
        want = ref(_nchw(x)).permute(0, 2, 3, 1).numpy()
        want_sized = ref(_nchw(x), output_size=(7, 9)).permute(0, 2, 3, 1).numpy()
    mod, params = Upsample2D(8), {"params": _params(ref)}
    assert rel_err(mod.apply(params, jnp.asarray(x)), want) < 1e-5
    assert rel_err(mod.apply(params, jnp.asarray(x), (7, 9)), want_sized) < 1e-5


def _numpy_joint_group_norm(x, groups, eps, scale, bias):
    """x (B, F, H, W, C): one mean/variance per (sample, group) over frames, pixels and group channels."""
    b, f, h, w, c = x.shape
    xg = x.astype(np.float64).reshape(b, f * h * w, groups, c // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = xg.var(axis=(1, 3), keepdims=True)
    return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def test_joint_resnet_matches_numpy_reference():
    """v1 resnet: both GroupNorms pool statistics over all frames; convs stay per frame."""
    rng = np.random.RandomState(0)
    x = (rng.randn(2, 5, 4, 6, 8) + np.arange(5)[None, :, None, None, None]).astype(np.float32)
    temb = rng.randn(2, 12).astype(np.float32)
    mod = ResnetBlock2D(8, groups=4, eps=1e-5, temb_channels=12, norm="joint")
    params = jax.tree.map(lambda p: p + 0.1 * rng.randn(*p.shape).astype(np.float32),
                          mod.init(jax.random.PRNGKey(0), x, temb)["params"])
    got = mod.apply({"params": params}, x, temb)

    def conv(h, p):  # 3x3 same conv per frame, HWIO kernel
        k, hp = np.asarray(p["kernel"], np.float64), np.pad(h, [(0, 0)] * 2 + [(1, 1)] * 2 + [(0, 0)])
        out = sum(np.einsum("bfhwi,io->bfhwo", hp[:, :, i:i + h.shape[2], j:j + h.shape[3]], k[i, j])
                  for i in range(3) for j in range(3))
        return out + np.asarray(p["bias"])

    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    gn = lambda v, p: _numpy_joint_group_norm(v, 4, 1e-5, np.asarray(p["scale"]), np.asarray(p["bias"]))  # noqa: E731
    h = conv(silu(gn(x, params["norm1"])), params["conv1"])
    t = silu(temb.astype(np.float64)) @ np.asarray(params["time_emb_proj"]["kernel"]) + np.asarray(
        params["time_emb_proj"]["bias"])
    h = conv(silu(gn(h + t[:, None, None, None, :], params["norm2"])), params["conv2"])
    assert rel_err(got, x + h) < 1e-5
    # The per-frame block differs: the joint statistics are really used.
    frame = ResnetBlock2D(8, groups=4, eps=1e-5, temb_channels=12, norm="frame")
    assert rel_err(frame.apply({"params": params}, x, temb), x + h) > 1e-2


def test_group_norm_frame_mode_equals_per_frame_images():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 4, 8))
    s, b = jnp.linspace(0.5, 1.5, 8), jnp.linspace(-1, 1, 8)
    video = group_norm(x, 2, 1e-5, s, b)
    images = group_norm(x.reshape(6, 4, 4, 8), 2, 1e-5, s, b).reshape(x.shape)
    assert rel_err(video, images) < 1e-6
    with pytest.raises(ValueError, match="not divisible"):
        group_norm(x, 3, 1e-5, s, b)
