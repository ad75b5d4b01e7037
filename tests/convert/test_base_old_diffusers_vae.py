"""A diffusers folder written by older diffusers (VAE attention `query/key/value/proj_attn`, as many hub SD1.x
folders still carry) loads like diffusers loads it: our VAE on it matches diffusers' AutoencoderKL."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from safetensors.torch import load_file, save_file

from animatediff_jax.models.vae import AutoencoderKL
from convert.base import load_base
from convert.io import CheckpointError
from tests.convert.ldm_fixtures import build, numpy_sd, save_folder
from tests.utils import rel_err

OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def to_old_layout(vae_dir: str) -> list[str]:
    """Rename the VAE's mid-block attention keys in place to older diffusers' names; returns the old keys."""
    path = os.path.join(vae_dir, "diffusion_pytorch_model.safetensors")
    sd, old = load_file(path), []
    for key in list(sd):
        for new, name in OLD_NAMES.items():
            if ".mid_block.attentions.0." in key and f".{new}." in key:
                renamed = key.replace(f".{new}.", f".{name}.")
                sd[renamed] = sd.pop(key)
                old.append(renamed)
    save_file(sd, path, metadata={"format": "pt"})
    return old


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory):
    unet, vae, text = build("small")
    folder = save_folder(str(tmp_path_factory.mktemp("old") / "sd"), unet, vae, text)
    old_keys = to_old_layout(os.path.join(folder, "vae"))
    return folder, vae, old_keys


def test_old_vae_attention_names_load_like_diffusers(old_folder):
    folder, vae, old_keys = old_folder
    assert len(old_keys) == 16  # encoder and decoder: 4 projections x (weight, bias)
    theirs = TorchAutoencoderKL.from_pretrained(os.path.join(folder, "vae")).eval()
    want, got = numpy_sd(vae), numpy_sd(theirs)  # diffusers itself reads this folder back to the same VAE
    assert want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)

    m = load_base(folder, progress=False)
    image = np.random.RandomState(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(0, 3, 1, 2)
        ref = theirs.decode(theirs.encode(x).latent_dist.mean).sample.permute(0, 2, 3, 1).numpy()
    ours = np.asarray(jax.jit(lambda p, a: AutoencoderKL(m.vae_config).apply({"params": p}, a))(
        jax.tree.map(jnp.asarray, m.vae), image))
    assert rel_err(ours, ref) <= 1e-4


def test_old_and_new_name_together_refused(old_folder, tmp_path):
    folder, _, _ = old_folder
    path = os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors")
    sd = load_file(path)
    sd["encoder.mid_block.attentions.0.to_q.weight"] = sd["encoder.mid_block.attentions.0.query.weight"].clone()
    both = tmp_path / "both"
    (both / "vae").mkdir(parents=True)
    for net in ("unet", "text_encoder"):
        os.symlink(os.path.join(folder, net), both / net)
    save_file(sd, str(both / "vae" / "diffusion_pytorch_model.safetensors"))
    (both / "vae" / "config.json").write_text(open(os.path.join(folder, "vae", "config.json")).read())
    with pytest.raises(CheckpointError, match=r"holds both .*query.weight.* and .*to_q.weight"):
        load_base(str(both), progress=False)
