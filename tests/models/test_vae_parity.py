"""AutoencoderKL vs diffusers' AutoencoderKL (PyTorch), tiny random configs, CPU, float32."""
import functools

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from animatediff_jax.models.configs import SD15_VAE, VAEConfig
from animatediff_jax.models.vae import AutoencoderKL, decode_video, encode_video, encode_video_moments, sample_latent
from animatediff_jax.params import torch_key_to_flax, unflatten
from convert.naming import state_dict_to_flax, torch_tensor_to_flax
from tests.utils import rel_err

# name: (config, image (H, W)); both non-square, the second with odd latent sizes (9 x 7).
CASES = {
    "three_blocks": (VAEConfig(block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                               up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1,
                               norm_num_groups=8, latent_channels=4), (32, 24)),
    "two_blocks": (VAEConfig(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=2,
                             norm_num_groups=16, latent_channels=3), (18, 14)),
}


def _torch_vae(config: VAEConfig):
    torch.manual_seed(0)
    vae = _build_torch_vae(config)
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in vae.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return vae


def _build_torch_vae(config: VAEConfig):
    return diffusers.AutoencoderKL(
        in_channels=config.in_channels, out_channels=config.out_channels,
        down_block_types=config.down_block_types, up_block_types=config.up_block_types,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        act_fn=config.act_fn, latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        scaling_factor=config.scaling_factor).eval()


@functools.cache
def _jitted(config: VAEConfig, dtype, method_name: str):
    """One compiled `AutoencoderKL(config, dtype).<method>` per combination, shared by the tests."""
    method = getattr(AutoencoderKL, method_name)
    return jax.jit(lambda p, x: AutoencoderKL(config, dtype=dtype).apply({"params": p}, x, method=method))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    config, (h, w) = CASES[request.param]
    vae = _torch_vae(config)
    params = state_dict_to_flax({k: v.numpy() for k, v in vae.state_dict().items()})
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, 3, h, w)).astype(np.float32)  # NCHW
    factor = 2 ** (len(config.block_out_channels) - 1)
    # Six latents: a (B=2, F=3) video for the chunked decode; the first two also decode as images.
    latents = rng.normal(size=(6, config.latent_channels, h // factor, w // factor)).astype(np.float32)
    with torch.no_grad():
        dist = vae.encode(torch.from_numpy(images)).latent_dist
        decoded = vae.decode(torch.from_numpy(latents)).sample
    ref = dict(mean=dist.mean.numpy(), logvar=dist.logvar.numpy(), decoded=decoded.numpy())
    nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    return config, params, nhwc(images), nhwc(latents), {k: nhwc(v) for k, v in ref.items()}


def test_param_tree_matches_rename(case):
    config, params, images, _, _ = case
    shapes = jax.eval_shape(lambda: AutoencoderKL(config).init(jax.random.key(0), jnp.asarray(images)))["params"]
    assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(np.shape, params)


def test_sd15_layout_matches_diffusers():
    """Full-size SD1.5 VAE: our param tree (abstract) has every tensor of diffusers' (meta device), 83.65M."""
    with torch.device("meta"):
        sd = _build_torch_vae(SD15_VAE).state_dict()
    expected = {}
    for key, t in sd.items():
        path = torch_key_to_flax(key, t.ndim)
        expected[path] = torch_tensor_to_flax(path, np.broadcast_to(np.float32(0), tuple(t.shape))).shape
    shapes = jax.eval_shape(lambda: AutoencoderKL(SD15_VAE).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert jax.tree.map(lambda x: x.shape, shapes["params"]) == unflatten(expected)
    assert sum(int(np.prod(s)) for s in expected.values()) == 83_653_863


def test_encode_matches_diffusers(case):
    config, params, images, _, ref = case
    mean, logvar = _jitted(config, jnp.float32, "encode")(params, images)
    errs = rel_err(mean, ref["mean"]), rel_err(logvar, ref["logvar"])
    print(f"encode mean {errs[0]:.2e} logvar {errs[1]:.2e}")
    assert max(errs) <= 1e-4, errs


def test_decode_matches_diffusers(case):
    config, params, _, latents, ref = case
    out = _jitted(config, jnp.float32, "decode")(params, latents[:2])
    err = rel_err(out, ref["decoded"][:2])
    print(f"decode {err:.2e}")
    assert err <= 1e-4


def test_video_decode_in_chunks_matches_diffusers(case):
    config, params, _, latents, ref = case
    video = latents.reshape(2, 3, *latents.shape[1:]) * config.scaling_factor  # (B, F, h, w, C), scaled
    out = decode_video(AutoencoderKL(config), params, video, chunk_size=4)  # 6 frames: 4 + 2 (padded)
    assert out.shape == (2, 3) + ref["decoded"].shape[1:]
    assert rel_err(out.reshape(ref["decoded"].shape), ref["decoded"]) <= 1e-4


def test_video_encode_in_chunks_scaling_and_sample(case):
    config, params, images, _, ref = case
    vae = AutoencoderKL(config)
    video = np.stack([images, images[::-1]], axis=1)  # (B=2, F=2, H, W, 3)
    as_video = lambda a: np.stack([a, a[::-1]], axis=1)
    mean, logvar = encode_video_moments(vae, params, video, chunk_size=3)  # 4 frames: 3 + 1 (padded)
    assert rel_err(mean, as_video(ref["mean"])) <= 1e-4 and rel_err(logvar, as_video(ref["logvar"])) <= 1e-4
    assert rel_err(encode_video(vae, params, video, chunk_size=3), mean * config.scaling_factor) <= 1e-6
    # With a key: a draw from the posterior, frames folded into the batch, whatever the chunking.
    key = jax.random.key(1)
    sampled = encode_video(vae, params, video, key, chunk_size=1)
    noise = (np.asarray(sampled) / config.scaling_factor - mean) / np.exp(0.5 * np.asarray(logvar))
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1, (noise.mean(), noise.std())
    flat = lambda a: np.asarray(a).reshape(-1, *a.shape[2:])  # (B, F, ...) -> (B*F, ...)
    expected = sample_latent(key, flat(mean), flat(logvar)) * config.scaling_factor
    assert rel_err(flat(sampled), expected) <= 1e-4


def test_bfloat16_close_to_float32(case):
    config, params, images, latents, _ = case
    run = lambda dtype, method, x: _jitted(config, dtype, method)(params, x)
    mean32, _ = run(jnp.float32, "encode", images)
    mean16, _ = run(jnp.bfloat16, "encode", images)
    dec32 = run(jnp.float32, "decode", latents[:2])
    dec16 = run(jnp.bfloat16, "decode", latents[:2])
    assert mean16.dtype == dec16.dtype == jnp.bfloat16
    errs = rel_err(mean16.astype(jnp.float32), mean32), rel_err(dec16.astype(jnp.float32), dec32)
    print(f"bf16 encode {errs[0]:.2e} decode {errs[1]:.2e}")
    assert max(errs) <= 2e-2, errs


def test_rejects_unsupported_layout():
    config = VAEConfig(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8)
    with pytest.raises(ValueError, match="AttnUpDecoderBlock2D"):
        jax.eval_shape(lambda: AutoencoderKL(config).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
