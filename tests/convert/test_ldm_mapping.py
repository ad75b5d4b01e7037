"""LDM single-file naming: our inverse mapping writes files that diffusers' own single-file loader reads
back to the same tensors, and our forward mapping reads them back to the same tensors too."""
import os

import numpy as np
import pytest
import torch

from convert import ldm
from tests.convert.ldm_fixtures import build, ldm_state_dict, numpy_sd, save_folder, save_single_file


@pytest.fixture(scope="module", params=["small", "wide"])
def models(request, tmp_path_factory):
    u, v, t = build(request.param)
    d = str(tmp_path_factory.mktemp(f"ldm_{request.param}"))
    save_folder(d, u, v, t)
    path = save_single_file(os.path.join(d, "model.safetensors"), ldm_state_dict(u, v, t))
    return u, v, t, d, path


def _same(a: dict, b: dict):
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
    for k in a:
        assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k


def test_key_rules_are_inverse(models):
    u, v, _, _, _ = models
    cfg = u.config
    attn = [t.startswith("CrossAttn") for t in cfg.up_block_types]
    for k in u.state_dict():
        ldm_key = ldm.unet_key_to_ldm(k, cfg.layers_per_block, attn)
        assert ldm.unet_key_to_diffusers(ldm_key, cfg.layers_per_block) == k
    n_up = len(v.config.up_block_types)
    for k in v.state_dict():
        assert ldm.vae_key_to_diffusers(ldm.vae_key_to_ldm(k, n_up), n_up) == k


def test_known_sd15_names():
    # A few names as they appear in the released v1-5-pruned checkpoint (layers_per_block = 2).
    cases = {
        "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight":
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
        "input_blocks.5.0.skip_connection.bias": "down_blocks.1.resnets.1.conv_shortcut.bias",
        "middle_block.2.emb_layers.1.weight": "mid_block.resnets.1.time_emb_proj.weight",
        "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
        "output_blocks.5.2.conv.bias": "up_blocks.1.upsamplers.0.conv.bias",
        "output_blocks.11.0.out_layers.3.weight": "up_blocks.3.resnets.2.conv2.weight",
        "time_embed.2.bias": "time_embedding.linear_2.bias", "out.0.weight": "conv_norm_out.weight",
    }
    for old, new in cases.items():
        assert ldm.unet_key_to_diffusers(old, 2) == new
        assert ldm.unet_key_to_ldm(new, 2, (False, True, True, True)) == old
    assert ldm.vae_key_to_diffusers("decoder.up.3.block.0.nin_shortcut.weight", 4) == \
        "decoder.up_blocks.0.resnets.0.conv_shortcut.weight"
    assert ldm.vae_key_to_diffusers("encoder.mid.attn_1.proj_out.bias", 4) == \
        "encoder.mid_block.attentions.0.to_out.0.bias"
    assert ldm.ema_key("model.diffusion_model.input_blocks.1.1.norm.weight") == \
        "model_ema.diffusion_modelinput_blocks11normweight"
    with pytest.raises(ldm.UnknownKey):
        ldm.unet_key_to_diffusers("input_blocks.1.7.weight", 2)


def test_diffusers_single_file_loader_reads_our_ldm_file(models):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel
    u, v, t, d, path = models
    u2 = UNet2DConditionModel.from_single_file(path, config=os.path.join(d, "unet"), local_files_only=True)
    v2 = AutoencoderKL.from_single_file(path, config=os.path.join(d, "vae"), local_files_only=True)
    t2 = create_diffusers_clip_model_from_ldm(CLIPTextModel, load_file(path), config=d, subfolder="text_encoder",
                                              local_files_only=True)
    for ours, theirs in ((u, u2), (v, v2), (t, t2)):
        _same(ours.state_dict(), theirs.state_dict())


def test_our_plan_reads_back_the_same_tensors(models):
    from convert.io import open_state_dict
    u, v, t, _, path = models
    with open_state_dict(path) as sd:
        plan, unexpected = ldm.plan_ldm(list(sd), sd.shape)
        assert unexpected == []
        for name, model in (("unet", u), ("vae", v)):
            got = {k: s.transform(sd[s.key]) for k, s in plan[name].items()}
            assert all(got[k].shape == s.shape for k, s in plan[name].items())
            _same(got, numpy_sd(model))
        got = {k: sd[s.key] for k, s in plan["text_encoder"].items()}
        _same(got, {"text_model." + k: x for k, x in numpy_sd(t).items()})


def test_plan_reports_unexpected_keys():
    shapes = {"model.diffusion_model.output_blocks.0.0.in_layers.0.weight": (4,),
              "model.diffusion_model.output_blocks.1.0.in_layers.0.weight": (4,),
              "model.diffusion_model.output_blocks.0.0.mystery.weight": (4,),
              "betas": (1000,), "some_other_model.weight": (3,)}
    _, unexpected = ldm.plan_ldm(list(shapes), shapes.__getitem__)
    assert sorted(unexpected) == ["model.diffusion_model.output_blocks.0.0.mystery.weight", "some_other_model.weight"]
    np.testing.assert_equal(ldm.vae_tensor_to_diffusers("encoder.mid_block.attentions.0.to_q.weight",
                                                        np.ones((3, 3, 1, 1))).shape, (3, 3))
