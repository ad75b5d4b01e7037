"""An export the training run ends with that needs torch (a PyTorch pickle) is checked before training
starts, not after (a run without torch trained fully, then failed writing motion_module.ckpt)."""
import dataclasses
import importlib.util

import pytest

from animatediff_jax import train
from animatediff_jax.errors import UserError
from animatediff_jax.training.config import load_config
from tests.training import tiny


@pytest.fixture
def no_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))


def config(tmp_path, **extra):
    return load_config(None, tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"), **extra))


def test_original_export_without_torch_fails_before_training(no_torch, tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "w"), *tiny.overrides(tiny.write_tokenizer(tmp_path / "tok"))]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: torch: not installed, but needed to write export_formats 'original' "
                          "(motion_module.ckpt)") and err.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_motion_lora_pickle_without_torch_is_named(no_torch, tmp_path):
    cfg = config(tmp_path, lora={"rank": 4, "targets": "unet"})
    motion_lora = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, targets="motion", file=None))
    with pytest.raises(UserError, match=r"lora.file 'motion_lora\.ckpt'.*name it .safetensors"):
        train.check_requirements(motion_lora)


def test_safetensors_exports_need_no_torch(no_torch, tmp_path):
    train.check_requirements(config(tmp_path, export_formats=["diffusers"]))
    train.check_requirements(config(tmp_path, lora={"rank": 4, "targets": "unet"}))
