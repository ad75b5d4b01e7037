"""`python -m convert export-motion-lora`: Flax LoRA factors (the training code's layout) -> MotionLoRA
files that read back through our reader and through diffusers' AnimateDiffPipeline.load_lora_weights."""
import copy

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler

from animatediff_jax.checkpoint import save_params
from animatediff_jax.params import flax_path_to_torch
from animatediff_jax.training.lora import init_factors
from convert.__main__ import main
from convert.lora import fuse_motion_loras
from convert.naming import flax_to_state_dict
from tests.convert.lora_helpers import tiny_text_encoder, tiny_unet
from tests.convert.motion_helpers import adapter_flax, random_adapter
from tests.utils import rel_err

ALPHA, RANK, SCALE = 2.0, 4, 0.7


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny v2 adapter, its Flax params, and "trained" factors (up non-zero) stored as the training
    code stores params: {"lora": {dotted kernel path: {"down", "up"}}} via save_params."""
    d = tmp_path_factory.mktemp("factors")
    adapter = random_adapter("v2", (32, 64), 2)
    params = adapter_flax(adapter)
    factors = init_factors(params, "motion", rank=RANK, seed=0)
    rng = np.random.default_rng(1)
    for f in factors.values():
        f["up"] = (0.1 * rng.standard_normal(f["up"].shape)).astype(np.float32)
    save_params(str(d / "factors.safetensors"), {"lora": factors}, metadata={"alpha": str(ALPHA)})
    return adapter, params, factors, d / "factors.safetensors"


def numpy_reference(params, factors, scale):
    """Motion state dict with W += scale · (alpha / r) · up @ down, in float64."""
    ref = {k: v.astype(np.float64) for k, v in flax_to_state_dict(params).items()}
    for name, f in factors.items():
        key = flax_path_to_torch(tuple(name.split(".")))
        ref[key] = ref[key] + scale * (ALPHA / RANK) * (f["up"].astype(np.float64) @ f["down"].astype(np.float64))
    return ref


def test_exported_original_reads_back_through_our_reader(tmp_path, trained):
    _, params, factors, path = trained
    assert main(["export-motion-lora", str(path), str(tmp_path / "v2_lora_mine.ckpt")]) == 0
    written = torch.load(tmp_path / "v2_lora_mine.ckpt", weights_only=True)
    assert len(written) == 2 * len(factors)
    assert all(".temporal_transformer." in k and ".attention_blocks." in k and ".processor." in k for k in written)
    ours = flax_to_state_dict(fuse_motion_loras(params, [(tmp_path / "v2_lora_mine.ckpt", SCALE)]))
    ref = numpy_reference(params, factors, SCALE)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert rel_err(ours[k], v) <= 1e-6, k


def test_exported_diffusers_format_matches_animatediff_pipeline(tmp_path, trained):
    adapter, params, factors, path = trained
    out = tmp_path / "motion_lora_diffusers.safetensors"
    assert main(["export-motion-lora", str(path), str(out), "--format", "diffusers"]) == 0
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=tiny_text_encoder(), tokenizer=None, unet=tiny_unet(),
                               motion_adapter=copy.deepcopy(adapter), scheduler=DDIMScheduler())
    pipe.load_lora_weights(str(out))
    pipe.fuse_lora(lora_scale=SCALE)
    pipe.unload_lora_weights()
    theirs = {k: v.numpy() for k, v in pipe.unet.state_dict().items() if ".motion_modules." in k and "pos_embed" not in k}
    ours = flax_to_state_dict(fuse_motion_loras(params, [(out, SCALE)]))
    ref = numpy_reference(params, factors, SCALE)
    assert set(theirs) == set(ours) == set(ref)
    changed = 0
    for k, v in ref.items():
        assert rel_err(theirs[k], v) <= 1e-5, k
        assert rel_err(ours[k], v) <= 1e-6, k
        changed += not np.array_equal(theirs[k], adapter.state_dict()[k].numpy())
    assert changed == len(factors)


def test_bad_factors_file_is_refused_and_nothing_written(tmp_path, trained):
    _, params, factors, _ = trained
    name = next(iter(factors))
    save_params(str(tmp_path / "half.safetensors"), {"lora": {name: {"down": factors[name]["down"]}}})
    assert main(["export-motion-lora", str(tmp_path / "half.safetensors"), str(tmp_path / "a.ckpt")]) == 1
    spatial = {"down_blocks_0.attentions_0.transformer_blocks_0.attn1.to_q.kernel": factors[name]}
    save_params(str(tmp_path / "spatial.safetensors"), {"lora": spatial})
    assert main(["export-motion-lora", str(tmp_path / "spatial.safetensors"), str(tmp_path / "b.ckpt")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.safetensors", "spatial.safetensors"]
