"""Every SD1.x input format, converted by us, runs in our Flax UNet / VAE / text encoder like the
diffusers / transformers original: relative error <= 1e-4 in float32, on two block layouts.

Formats: diffusers folder (.safetensors, .bin), LDM single file (.safetensors, .ckpt plain and under
"state_dict"), and a single file carrying EMA weights (both selections checked, and the EMA file is
cross-checked with diffusers' own `from_single_file(extract_ema=True)`).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL
from convert import ldm
from convert.base import load_base
from tests.convert.ldm_fixtures import build, ldm_state_dict, numpy_sd, randomize, save_folder, save_single_file
from tests.utils import rel_err

TOL = 1e-4


def _formats(d, u, v, t, u_ema):
    sd = ldm_state_dict(u, v, t)
    ema = dict(sd)
    ema.update({ldm.ema_key(k): x for k, x in ldm_state_dict(u_ema, v, t).items() if k.startswith(ldm.UNET_PREFIX)})
    return {
        "folder-safetensors": (save_folder(os.path.join(d, "sf"), u, v, t, safe=True), {}),
        "folder-bin": (save_folder(os.path.join(d, "bin"), u, v, t, safe=False), {}),
        "single-safetensors": (save_single_file(os.path.join(d, "m.safetensors"), sd), {}),
        "single-ckpt": (save_single_file(os.path.join(d, "m.ckpt"), sd), {}),
        "single-ckpt-state_dict": (save_single_file(os.path.join(d, "w.ckpt"), sd, wrap=True), {}),
        "single-ema-off": (save_single_file(os.path.join(d, "ema.safetensors"), ema), {}),
        "single-ema-on": (os.path.join(d, "ema.safetensors"), {"ema": True}),
    }


@pytest.fixture(scope="module", params=["small", "wide"])
def case(request, tmp_path_factory):
    """Torch models, reference outputs, jitted Flax functions and the files in every format."""
    from diffusers import UNet2DConditionModel
    variant = request.param
    u, v, t = build(variant)
    u_ema = randomize(UNet2DConditionModel(**u.config), seed=7)
    d = str(tmp_path_factory.mktemp(f"base_{variant}"))
    files = _formats(d, u, v, t, u_ema)
    if variant == "wide":  # the second layout: one folder and one single file suffice
        files = {k: files[k] for k in ("folder-safetensors", "single-safetensors", "single-ema-on")}

    rng = np.random.RandomState(0)
    b, f, h, w = 2, 3, 8, 12  # odd frame count, non-square latents
    sample = rng.randn(b, f, h, w, u.config.in_channels).astype(np.float32)
    steps = np.array([981, 3], np.int64)
    ctx = rng.randn(b, 5, u.config.cross_attention_dim).astype(np.float32)
    image = rng.uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
    ids = rng.randint(3, t.config.vocab_size, (2, t.config.max_position_embeddings))
    ids[:, -3] = t.config.eos_token_id

    def unet_ref(model):
        with torch.no_grad():
            x = torch.from_numpy(sample).permute(0, 1, 4, 2, 3).reshape(b * f, -1, h, w)
            out = model(x, torch.from_numpy(steps).repeat_interleave(f), torch.from_numpy(ctx).repeat_interleave(f, 0))
        return out.sample.reshape(b, f, -1, h, w).permute(0, 1, 3, 4, 2).numpy()

    with torch.no_grad():
        x = torch.from_numpy(image).permute(0, 3, 1, 2)
        vae_ref = v.decode(v.encode(x).latent_dist.mean).sample.permute(0, 2, 3, 1).numpy()
        text_ref = t(torch.from_numpy(ids)).last_hidden_state.numpy()
    refs = {"unet": unet_ref(u), "unet_ema": unet_ref(u_ema), "vae": vae_ref, "text_encoder": text_ref}
    return dict(files=files, refs=refs, inputs=(sample, steps, ctx, image, ids), u=u, u_ema=u_ema, dir=d)


_JIT = {}


def _run(model, params, *args):
    """Apply with params as an argument: one compile per network and config, reused by every format."""
    if repr(model) not in _JIT:
        _JIT[repr(model)] = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
    out = _JIT[repr(model)](jax.tree.map(jnp.asarray, params), *args)
    return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else np.asarray(out)


def test_every_format_matches_the_reference(case):
    sample, steps, ctx, image, ids = case["inputs"]
    for fmt, (path, kw) in case["files"].items():
        m = load_base(path, progress=False, **kw)
        unet_out = _run(UNet3DConditionModel(m.unet_config, None), m.unet, sample, steps, ctx)
        vae_out = _run(AutoencoderKL(m.vae_config), m.vae, image)
        text_out = _run(CLIPTextModel(m.text_config), m.text_encoder, ids)[0]  # last_hidden_state
        unet_ref = case["refs"]["unet_ema" if kw.get("ema") else "unet"]
        errs = (rel_err(unet_out, unet_ref), rel_err(vae_out, case["refs"]["vae"]),
                rel_err(text_out, case["refs"]["text_encoder"]))
        assert max(errs) <= TOL, (fmt, errs)
        assert m.source_format.split("-")[0] in ("diffusers", "ldm")


def test_ema_file_agrees_with_diffusers_extract_ema(case):
    from diffusers import UNet2DConditionModel
    path = case["files"]["single-ema-on"][0]
    theirs = UNet2DConditionModel.from_single_file(path, config=os.path.join(case["dir"], "sf", "unet"),
                                                   local_files_only=True, extract_ema=True)
    want, got = numpy_sd(case["u_ema"]), numpy_sd(theirs)
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
