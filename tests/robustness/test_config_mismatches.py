"""A config.json whose values have the right types but do not fit together (list lengths, norm groups or
heads that do not divide the channels) is one line naming the file and the keys, when the config is read
(before any weights): UNet, VAE and CLIP text configs of a base folder (sample --base and the loader),
ControlNet (convert controlnet) and MotionAdapter (convert motion) configs."""
import json
import os
import shutil
from pathlib import Path

import pytest

from animatediff_jax import sample
from animatediff_jax.errors import InputError
from animatediff_jax.loading import read_base
from convert.__main__ import main as convert_main
from tests.convert import controlnet_fixtures as F
from tests.convert.motion_helpers import random_adapter
from tests.sampling.tiny_models import write_base_folder

BASE_CASES = [
    ("unet", dict(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]),
     "UNetConfig: down_block_types has 3 entries but block_out_channels has 2"),
    ("unet", dict(norm_num_groups=12), "UNetConfig: norm_num_groups 12 does not divide block_out_channels [32, 64]"),
    ("unet", dict(attention_head_dim=[4, 4, 4]), "UNetConfig: attention_head_dim has 3 entries but "
                                                 "block_out_channels has 2"),
    ("unet", dict(attention_head_dim=5), "UNetConfig: attention_head_dim 5 does not divide block_out_channels [32, 64]"),
    ("vae", dict(up_block_types=["UpDecoderBlock2D"] * 3),
     "VAEConfig: up_block_types must be 4 x 'UpDecoderBlock2D' (one per block_out_channels), got "
     "['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D']"),
    ("vae", dict(norm_num_groups=3), "VAEConfig: norm_num_groups 3 does not divide block_out_channels [8, 16, 16, 16]"),
    ("text_encoder", dict(num_attention_heads=5), "CLIPTextConfig: num_attention_heads 5 does not divide hidden_size 32"),
]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return write_base_folder(str(tmp_path_factory.mktemp("base") / "base"))


def _mismatched(folder: Path, changes: dict, keep_weights: bool = False) -> Path:
    """`folder/config.json` with `changes`, and no weights beside it unless `keep_weights` (the config
    is refused before they are read)."""
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **changes}))
    if not keep_weights:
        for weights in folder.glob("diffusion_pytorch_model*"):
            weights.unlink()
    return config_file


def _line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("network,changes,problem", BASE_CASES)
def test_sample_names_the_base_config_json(base_folder, tmp_path, capsys, monkeypatch, network, changes, problem):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(base_folder, tmp_path / "base")
    config_file = _mismatched(folder / network, changes)
    assert sample.main(["--base", str(folder), "--prompt", "p", "--out", str(tmp_path / "o")]) == 1
    assert _line(capsys) == f"error: --base {folder}: {config_file}: unusable config ({problem})"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("network,changes,problem", BASE_CASES[::3])
def test_the_loader_names_the_base_config_json(base_folder, tmp_path, network, changes, problem):
    folder = shutil.copytree(base_folder, tmp_path / "base")
    config_file = _mismatched(folder / network, changes)
    with pytest.raises(InputError) as e:
        read_base(str(folder))
    assert str(e.value) == f"{config_file}: unusable config ({problem})"


@pytest.mark.parametrize("changes,problem", [
    (dict(down_block_types=["CrossAttnDownBlock2D"] * 3), "down_block_types has 3 entries but block_out_channels has 2"),
    (dict(norm_num_groups=5), "norm_num_groups 5 does not divide block_out_channels [32, 64]"),
    (dict(conditioning_embedding_out_channels=[]), "conditioning_embedding_out_channels is empty"),
])
def test_convert_controlnet_names_its_config_json(tmp_path, capsys, changes, problem):
    folder = Path(F.save_folder(F.controlnet(), str(tmp_path / "cn")))
    config_file = _mismatched(folder, changes, keep_weights=True)  # their keys are checked first (SDXL)
    capsys.readouterr()
    assert convert_main(["controlnet", str(folder), str(tmp_path / "out.safetensors")]) == 1
    assert _line(capsys) == f"error: {config_file}: unsupported ControlNet config (ControlNetConfig: {problem})"
    assert not os.path.exists(tmp_path / "out.safetensors")


@pytest.mark.parametrize("changes,problem", [
    (dict(motion_num_attention_heads=[2, 2, 2]), "motion_num_attention_heads has 3 entries but block_out_channels has 2"),
    (dict(motion_num_attention_heads=5), "motion_num_attention_heads 5 does not divide block_out_channels [32, 64]"),
    (dict(motion_norm_num_groups=3), "motion_norm_num_groups 3 does not divide block_out_channels [32, 64]"),
])
def test_convert_motion_names_the_adapter_config_json(tmp_path, capsys, changes, problem):
    random_adapter().save_pretrained(str(tmp_path / "mm"))
    config_file = _mismatched(tmp_path / "mm", changes)
    assert convert_main(["motion", str(tmp_path / "mm"), str(tmp_path / "out.safetensors"), "-q"]) == 1
    assert _line(capsys) == f"error: {config_file}: {problem}"
    assert not os.path.exists(tmp_path / "out.safetensors")
