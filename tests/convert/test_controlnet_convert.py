"""ControlNet / SparseCtrl conversion (convert/controlnet.py) against diffusers as the oracle.

Random-weight files in every real layout (tests/convert/controlnet_fixtures.py): converted params
must equal the Flax rename of the diffusers model's state dict exactly (SparseCtrl without its
`pos_embed.pe` buffers), and the configs those of the diffusers model. The LDM and original-SparseCtrl
files are also read by diffusers' own `from_single_file` (offline, `config=` the local folder), which
must give back the same state dict: that checks the test files' layout independently of our mapping.
"""
import json
import os

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from animatediff_jax.checkpoint import save_params
from animatediff_jax.errors import UsageError
from animatediff_jax.models.configs import ControlNetConfig, MotionConfig, sparsectrl_motion_config
from animatediff_jax.params import flatten
from convert.__main__ import main as convert_main
from convert.controlnet import convert_controlnet, load_controlnet, plan_controlnet
from convert.detect import describe
from convert.motion import MotionModuleError
from convert.io import CheckpointError
from convert.naming import state_dict_to_flax
from tests.convert import controlnet_fixtures as F

SPARSE_HIDDEN = dict(F.HIDDEN, motion_num_attention_heads=2)


def _flax_of(sd):
    """The expected params: the Flax rename of a diffusers state dict, without `pos_embed.pe`."""
    return flatten(state_dict_to_flax({k: v for k, v in sd.items() if not k.endswith("pos_embed.pe")}))


def _assert_params_equal(params, sd):
    want, have = _flax_of(sd), flatten(params)
    assert set(have) == set(want)
    bad = [p for p in want if have[p].shape != want[p].shape or not np.array_equal(np.asarray(have[p]), want[p])]
    assert not bad, bad[:3]


def _diffusers_config(model) -> dict:
    return {"_class_name": type(model).__name__, **dict(model.config)}


@pytest.fixture(scope="module")
def controlnets(tmp_path_factory):
    """{variant: (model, state dict, folder)} for the two ControlNet layouts."""
    root = tmp_path_factory.mktemp("controlnets")
    out = {}
    for i, variant in enumerate(F.CONTROLNETS):
        model = F.controlnet(variant, seed=i)
        out[variant] = (model, F.state_dict(model), F.save_folder(model, str(root / variant)))
    return out


@pytest.fixture(scope="module")
def sparsectrls(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparsectrls")
    out = {}
    for i, variant in enumerate(F.SPARSECTRLS):
        model = F.sparsectrl(variant, seed=10 + i)
        out[variant] = (model, F.state_dict(model), F.save_folder(model, str(root / variant)))
    return out


# ----------------------------------------------------------------------------- ControlNet

@pytest.mark.parametrize("variant, prefix, ext", [("small", "control_model.", "pth"), ("small", "", "safetensors"),
                                                  ("wide", "control_model.", "safetensors")])
def test_ldm_single_file_equals_the_diffusers_model(controlnets, tmp_path, variant, prefix, ext):
    model, sd, folder = controlnets[variant]
    ldm = F.to_ldm(sd, model.config.layers_per_block, prefix)
    path = str(tmp_path / f"control_v11p_sd15_test.{ext}")
    (F.save_torch if ext == "pth" else F.save_safetensors)(ldm, path)
    net = load_controlnet(path, overrides=F.HIDDEN)
    assert net.kind == "controlnet" and net.motion is None
    assert net.config == ControlNetConfig.from_dict(_diffusers_config(model))
    _assert_params_equal(net.params, sd)
    if variant == "small" and prefix:  # diffusers' own reader agrees on the file's layout
        from diffusers import ControlNetModel
        ref = ControlNetModel.from_single_file(path, config=folder, local_files_only=True).state_dict()
        assert set(ref) == set(sd) and all(torch.equal(ref[k], torch.from_numpy(sd[k])) for k in sd)


def test_ldm_file_holding_a_whole_sd_model_uses_the_control_model_only(controlnets, tmp_path):
    """v1.0 files (control_sd15_*.pth) hold the SD model beside `control_model.`: it is ignored."""
    model, sd, _ = controlnets["small"]
    ldm = F.to_ldm(sd, 1)
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = np.zeros((32, 4, 3, 3), np.float32)
    ldm["first_stage_model.decoder.conv_in.weight"] = np.zeros((8, 4, 3, 3), np.float32)
    net = load_controlnet(F.save_torch(ldm, str(tmp_path / "control_sd15_canny.pth")), overrides=F.HIDDEN)
    _assert_params_equal(net.params, sd)


@pytest.mark.parametrize("variant", ["small", "wide"])
def test_diffusers_folder_and_its_weights_file_alone(controlnets, variant):
    model, sd, folder = controlnets[variant]
    net = load_controlnet(folder)
    assert net.kind == "controlnet" and net.config == ControlNetConfig.from_dict(_diffusers_config(model))
    _assert_params_equal(net.params, sd)
    alone = load_controlnet(os.path.join(folder, "diffusion_pytorch_model.safetensors"), overrides=F.HIDDEN)
    assert alone.config == net.config
    _assert_params_equal(alone.params, sd)


def test_hub_id_resolves_through_the_offline_cache(controlnets, tmp_path, monkeypatch):
    model, sd, folder = controlnets["small"]
    repo = tmp_path / "models--org--tiny-controlnet"
    model.save_pretrained(str(repo / "snapshots" / ("a" * 40)))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _assert_params_equal(load_controlnet("org/tiny-controlnet").params, sd)
    with pytest.raises(CheckpointError, match="org/not-cached: no such local file or folder"):
        load_controlnet("org/not-cached")


def test_dtype_cast_and_converted_file_round_trip(controlnets, tmp_path):
    _, sd, folder = controlnets["small"]
    half = load_controlnet(folder, dtype="float16")
    assert all(np.asarray(v).dtype == np.float16 for v in flatten(half.params).values())
    out = str(tmp_path / "cn.safetensors")
    convert_controlnet(folder, out)
    back = load_controlnet(out)
    assert back.kind == "controlnet" and back.config == load_controlnet(folder).config
    _assert_params_equal(back.params, sd)
    half = load_controlnet(out, dtype="float16").params
    assert all(np.asarray(v).dtype == np.float16 for v in flatten(half).values())
    with pytest.raises(UsageError, match="is already converted"):
        load_controlnet(out, overrides={"global_pool_conditions": True})
    plan = plan_controlnet(out)  # what the sampler checks before loading
    plan.close()
    assert (plan.kind, plan.config, plan.source_format) == ("controlnet", back.config, "flax")
    other = str(tmp_path / "motion.safetensors")
    save_params(other, {"w": np.zeros(2, np.float32)}, config=MotionConfig())
    with pytest.raises(CheckpointError, match="motion.safetensors: holds MotionConfig params, not a ControlNet"):
        load_controlnet(other)


# ----------------------------------------------------------------------------- SparseCtrl

@pytest.mark.parametrize("variant, wrapper", [("rgb", None), ("rgb", "controlnet"), ("scribble", None),
                                              ("scribble", "state_dict"), ("deep", None)])
def test_original_sparsectrl_ckpt_equals_the_diffusers_model(sparsectrls, tmp_path, variant, wrapper):
    model, sd, folder = sparsectrls[variant]
    path = F.save_torch(F.to_original_sparsectrl(sd), str(tmp_path / f"v3_sd15_sparsectrl_{variant}.ckpt"), wrapper)
    net = load_controlnet(path, overrides=SPARSE_HIDDEN)
    diffusers_config = _diffusers_config(model)
    assert net.kind == "sparsectrl"
    assert net.config == ControlNetConfig.from_dict(diffusers_config)
    assert net.motion == sparsectrl_motion_config(diffusers_config)
    assert net.motion.max_seq_length == 32 and not net.motion.double_self_attention
    _assert_params_equal(net.params, sd)
    if wrapper is None:  # diffusers' own reader agrees on the file's layout
        from diffusers import SparseControlNetModel
        ref = SparseControlNetModel.from_single_file(path, config=folder, local_files_only=True).state_dict()
        assert set(ref) == set(sd) and all(torch.equal(ref[k], torch.from_numpy(sd[k])) for k in sd)


def test_a_sparsectrl_position_encoding_off_the_sinusoid_is_refused_unless_replaced(sparsectrls, controlnets, tmp_path,
                                                                                 capsys):
    """It only warned, as motion modules once did: the network computes the sinusoid, so an encoder with a
    trained or stretched encoding behaves differently here than in the original and diffusers."""
    model, sd, folder = sparsectrls["rgb"]
    stretched = {k: v + 0.5 if k.endswith("pos_encoder.pe") else v for k, v in F.to_original_sparsectrl(sd).items()}
    path = F.save_torch(stretched, str(tmp_path / "v3_sd15_sparsectrl_rgb.ckpt"))
    with pytest.raises(MotionModuleError, match=r"not the standard sinusoid \(max abs difference 0.5\).*pass "
                                                r"`--replace-pe` \(python -m convert controlnet, then --sparsectrl"):
        load_controlnet(path, overrides=SPARSE_HIDDEN)
    _assert_params_equal(load_controlnet(path, overrides=SPARSE_HIDDEN, replace_pe=True).params, sd)
    out = tmp_path / "sparse.safetensors"
    assert convert_main(["controlnet", path, str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: its stored position encoding") and err.count("\n") == 1, err
    assert not out.exists()
    assert convert_main(["controlnet", path, str(out), "--replace-pe", "--overrides", json.dumps(SPARSE_HIDDEN)]) == 0
    _assert_params_equal(load_controlnet(str(out)).params, sd)
    capsys.readouterr()
    for given, what in ((str(out), "a converted SparseCtrl encoder, which stores no position encoding"),
                        (controlnets["small"][2], "a ControlNet, which has no motion modules")):
        assert convert_main(["controlnet", given, str(tmp_path / "again.safetensors"), "--replace-pe"]) == 2
        assert capsys.readouterr().err == f"error: --replace-pe: not used: {given} is {what}\n"


@pytest.mark.parametrize("variant", ["rgb", "scribble", "deep"])
def test_sparsectrl_folder(sparsectrls, variant):
    model, sd, folder = sparsectrls[variant]
    net = load_controlnet(folder)
    assert net.kind == "sparsectrl" and net.config == ControlNetConfig.from_dict(_diffusers_config(model))
    assert net.motion == sparsectrl_motion_config(_diffusers_config(model))
    _assert_params_equal(net.params, sd)


def test_sparsectrl_defaults_for_what_the_file_cannot_show(sparsectrls, tmp_path):
    """Without overrides a single file gets the v3 release's settings: 8 motion heads, 32 groups,
    the position-encoding length read from `pos_encoder.pe` (here 24)."""
    from diffusers import SparseControlNetModel
    model = F.randomize(SparseControlNetModel(**dict(F.SPARSECTRL_RGB, motion_max_seq_length=24)))
    path = F.save_torch(F.to_original_sparsectrl(F.state_dict(model)), str(tmp_path / "sc.ckpt"))
    net = load_controlnet(path)
    assert net.motion == MotionConfig(num_attention_heads=8, max_seq_length=24, use_mid_block=False,
                                      norm_num_groups=32, double_self_attention=False)
    assert (net.config.norm_num_groups, net.config.attention_head_dim) == (32, 8)
    assert net.config.use_simplified_condition_embedding and net.config.conditioning_channels == 4


def test_sparsectrl_converted_file_round_trip(sparsectrls, tmp_path):
    _, sd, folder = sparsectrls["scribble"]
    out = str(tmp_path / "sc.safetensors")
    convert_controlnet(folder, out)
    back, net = load_controlnet(out), load_controlnet(folder)
    assert (back.kind, back.config, back.motion) == (net.kind, net.config, net.motion)
    _assert_params_equal(back.params, sd)


def test_describe_names_the_kind_and_layout(controlnets, sparsectrls, tmp_path):
    _, sd, _ = controlnets["small"]
    info = describe(F.save_safetensors(F.to_ldm(sd, 1), str(tmp_path / "c.safetensors")))
    assert (info["kind"], info["layout"]) == ("controlnet", "ldm")
    original = F.to_original_sparsectrl(sparsectrls["rgb"][1])
    info = describe(F.save_safetensors(original, str(tmp_path / "s.safetensors")))
    assert (info["kind"], info["layout"]) == ("sparsectrl", "original")


def test_trainer_module_prefix_is_dropped(sparsectrls, tmp_path):
    """Checkpoints saved through DataParallel prefix every key with `module.`."""
    _, sd, _ = sparsectrls["rgb"]
    prefixed = {"module." + k: v for k, v in F.to_original_sparsectrl(sd).items()}
    net = load_controlnet(F.save_torch(prefixed, str(tmp_path / "sc.ckpt"), "state_dict"), overrides=SPARSE_HIDDEN)
    _assert_params_equal(net.params, sd)
