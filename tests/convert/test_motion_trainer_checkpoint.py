"""Motion modules without `pos_encoder.pe` (the original trainer's saves, AnimateLCM-style files):
the version comes from the caller, never from a guess; with it, the file loads as its released twin."""
import pytest
import torch

from convert.__main__ import main
from convert.commands_motion import load_motion
from convert.motion import MotionModuleError, load_motion_module
from tests.convert.motion_helpers import adapter_flax, original_state_dict, random_adapter, write_original
from tests.convert.test_motion_convert import assert_same_tree


def write_trainer_checkpoint(adapter, path):
    """As the original train.py saves it: torch.save({"epoch", "global_step", "state_dict": unet.state_dict()})
    of the DDP-wrapped UNet: every key `module.`-prefixed, the image UNet included, no pos_encoder.pe
    (registered non-persistent)."""
    sd = {k: v for k, v in original_state_dict(adapter).items() if not k.endswith("pos_encoder.pe")}
    sd.update({"conv_in.weight": torch.randn(32, 4, 3, 3), "down_blocks.0.resnets.0.norm1.weight": torch.ones(32)})
    torch.save({"epoch": 3, "global_step": 1200, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, str(path))


@pytest.fixture(scope="module")
def v1_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("trainer")
    adapter = random_adapter("v1", (32, 64), 1, seed=3)
    write_original(original_state_dict(adapter), d / "released.ckpt")  # as released: pe of length 24
    write_trainer_checkpoint(adapter, d / "checkpoint.ckpt")
    return adapter, d / "released.ckpt", d / "checkpoint.ckpt"


def load(path, **kw):
    with pytest.warns(UserWarning, match="ignoring 2 image-UNet keys"):
        return load_motion_module(path, heads=2, norm_num_groups=8, **kw)


def test_trainer_checkpoint_equals_released_layout_given_its_version(v1_files):
    adapter, released, trainer = v1_files
    ref = load_motion_module(released, heads=2, norm_num_groups=8)
    mm = load(trainer, version="v1")
    assert_same_tree(mm.params, ref.params)
    assert_same_tree(mm.params, adapter_flax(adapter))
    assert mm.config == ref.config and mm.version == ref.version == "v1"
    assert (mm.config.resnet_norm, mm.config.max_seq_length, mm.config.use_mid_block) == ("joint", 24, False)


@pytest.mark.parametrize("kw", [{}, {"max_seq_length": 24}, {"max_seq_length": 32}])
def test_no_version_is_refused_not_guessed(v1_files, kw):
    _, _, trainer = v1_files
    with pytest.raises(MotionModuleError) as e:
        load(trainer, **kw)
    msg = str(e.value)
    assert msg.startswith(f"{trainer}: no position-encoding buffer")
    for part in ("--motion-version", "--version", "v1: position-encoding length 24, joint resnet GroupNorm",
                 "v2: length 32, per-frame resnet GroupNorm, a mid-block module", "v3: length 32, per-frame",
                 "has no mid-block module (v1 or v3)"):
        assert part in msg, part


def test_explicit_version_is_honoured_and_checked(v1_files):
    _, _, trainer = v1_files
    v3 = load(trainer, version="v3")
    assert (v3.config.resnet_norm, v3.config.max_seq_length, v3.version) == ("frame", 32, "v3")
    assert load(trainer, version="v1", max_seq_length=16).config.max_seq_length == 16
    with pytest.raises(MotionModuleError, match=r"checkpoint.ckpt: given version v2 .* the file has no mid-block"):
        load(trainer, version="v2")
    with pytest.raises(ValueError, match=r"unknown motion-module version 'v4'"):
        load(trainer, version="v4")


def test_mid_block_file_without_pe_needs_a_version_too(tmp_path):
    """An AnimateLCM-style file (original names, mid block, no pe): refused without a version, and with
    v2 equal to the released v2 layout."""
    adapter = random_adapter("v2", (32, 64), 1, seed=4)
    sd = original_state_dict(adapter)
    write_original(sd, tmp_path / "released.safetensors")
    write_original({k: v for k, v in sd.items() if not k.endswith("pos_encoder.pe")}, tmp_path / "lcm.safetensors")
    with pytest.raises(MotionModuleError, match=r"lcm.safetensors: no position-encoding .* has a mid-block module "
                                                r"\(of these only v2 has one\)"):
        load_motion_module(tmp_path / "lcm.safetensors", heads=2, norm_num_groups=8)
    mm = load_motion_module(tmp_path / "lcm.safetensors", heads=2, norm_num_groups=8, version="v2")
    ref = load_motion_module(tmp_path / "released.safetensors", heads=2, norm_num_groups=8)
    assert_same_tree(mm.params, ref.params)
    assert mm.config == ref.config and mm.version == "v2"


def test_convert_motion_cli_version_flag(v1_files, tmp_path, capsys):
    _, released, trainer = v1_files
    args = ["motion", str(trainer), str(tmp_path / "mm.safetensors"), "--heads", "2", "--norm-groups", "8", "-q"]
    with pytest.warns(UserWarning):
        assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {trainer}: no position-encoding buffer") and "--version" in err
    assert not (tmp_path / "mm.safetensors").exists()
    with pytest.warns(UserWarning):
        assert main(args + ["--version", "v1"]) == 0
    assert "motion module v1, max_seq_length 24" in capsys.readouterr().out
    assert_same_tree(load_motion(str(tmp_path / "mm.safetensors")).params,
                     load_motion_module(released, heads=2, norm_num_groups=8).params)
