"""A first-release prompt config's `path` ending in `.ckpt` (issue 14.1): the original's
`state_dict = torch.load(path); pipeline.unet.load_state_dict(state_dict)` -- the whole UNet3D (image
layers in diffusers names, motion modules in the original's, `pos_encoder.pe` included), loaded
strictly after the motion module. Numerically: a `.ckpt` written in that layout from random weights,
run through a first-release config, gives the frames our pipeline gives with the same UNet params
handed over directly (a converted base folder and a Flax motion module holding them)."""
import os
import shutil

import numpy as np
import pytest
import torch

from animatediff_jax import sample
from animatediff_jax.checkpoint import load_config, load_params, read_metadata, save_params
from animatediff_jax.miniature.shipped import MINIATURE, motion_path
from convert.export import motion_to_original
from convert.motion import MotionModule, motion_metadata
from convert.naming import flax_to_state_dict

BASE = os.path.join(MINIATURE, "base")
MOTION = motion_path(MINIATURE, "B")
CONFIG = """
- motion_module:
    - "{motion}"
  path: "{path}"
  base: ""
  prompt:
    - "a red circle moving right"
  n_prompt:
    - ""
  seed: [7]
  steps: 2
  guidance_scale: 7.5
  W: 32
  H: 32
  L: 4
"""


def _random_like(tree, rng):
    return {k: _random_like(v, rng) if isinstance(v, dict) else
            (rng.standard_normal(np.shape(v)) * 0.05).astype(np.float32) for k, v in tree.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The random UNet3D as a first-release .ckpt, and the same params as a converted base folder + a
    Flax motion module (the direct route)."""
    d = tmp_path_factory.mktemp("first_release")
    rng = np.random.default_rng(0)
    unet, unet_meta = load_params(os.path.join(BASE, "unet.safetensors"))
    motion, motion_meta = load_params(MOTION)
    unet2d, mm_params = _random_like(unet, rng), _random_like(motion, rng)
    mm = MotionModule(mm_params, load_config(motion_meta), (32, 64), 1, "v2")
    sd = {**flax_to_state_dict(unet2d), **motion_to_original(mm.params, mm.config)}
    assert any(k.endswith("pos_encoder.pe") for k in sd) and "conv_in.weight" in sd
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, str(d / "unet3d.ckpt"))
    direct = d / "direct"
    shutil.copytree(BASE, direct)
    save_params(str(direct / "unet.safetensors"), unet2d, config=load_config(unet_meta), source="test")
    save_params(str(d / "mm.safetensors"), mm.params, config=mm.config, source="test", metadata=motion_metadata(mm))
    assert read_metadata(str(d / "mm.safetensors"))["format"] == "flax"
    return d, sd


def _frames(out) -> np.ndarray:
    (run,) = os.listdir(out)
    (npy,) = [f for f in os.listdir(out / run / "sample") if f.endswith(".npy")]
    return np.load(out / run / "sample" / npy)


def test_ckpt_path_equals_the_same_unet_params_given_directly(files, tmp_path, monkeypatch):
    d, _ = files
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "first.yaml"
    config.write_text(CONFIG.format(motion=MOTION, path=d / "unet3d.ckpt"))
    common = ["--no-progress", "--save-npy", "--dtype", "float32"]
    assert sample.main([str(config), "--base", BASE, *common, "--out", str(tmp_path / "a")]) == 0
    assert sample.main(["--base", str(d / "direct"), "--motion-module", str(d / "mm.safetensors"), "--prompt",
                        "a red circle moving right", "--seed", "7", "--steps", "2", "--width", "32", "--height", "32",
                        "--frames", "4", *common, "--out", str(tmp_path / "b")]) == 0
    via_ckpt, direct = _frames(tmp_path / "a"), _frames(tmp_path / "b")
    assert via_ckpt.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(via_ckpt, direct)
    base_only = tmp_path / "c"  # and the .ckpt did replace the base's UNet and the module (not a no-op)
    assert sample.main(["--base", BASE, "--motion-module", MOTION, "--prompt", "a red circle moving right", "--seed",
                        "7", "--steps", "2", "--width", "32", "--height", "32", "--frames", "4", *common,
                        "--out", str(base_only)]) == 0
    assert np.abs(_frames(base_only) - direct).max() > 0.05


def _run_config(tmp_path, monkeypatch, capsys, ckpt) -> tuple[int, str]:
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "first.yaml"
    config.write_text(CONFIG.format(motion=MOTION, path=ckpt))
    code = sample.main([str(config), "--base", BASE, "--no-progress", "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    return code, lines[-1]


def test_an_ldm_checkpoint_as_ckpt_path_says_what_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sample, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model"))
    ldm = tmp_path / "dreambooth.ckpt"
    torch.save({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4, 3, 3),
                "first_stage_model.decoder.conv_out.bias": torch.zeros(3)}, str(ldm))
    code, line = _run_config(tmp_path, monkeypatch, capsys, ldm)
    assert code == 1
    assert line == (f"error: {ldm}: an LDM single-file checkpoint (model.diffusion_model.* keys: a DreamBooth / SD "
                    "model as A1111 and civitai share it), not the UNet3D state dict a first-release `.ckpt` path is "
                    "(the original loads it with unet.load_state_dict); name it as the entry's dreambooth_path "
                    "instead")


@pytest.mark.parametrize("edit,problem", [
    ("drop", "1 missing keys, e.g. 'conv_in.weight'"),
    ("extra", "1 unexpected keys, e.g. 'extra.weight'"),
    ("pe", "of other shapes, e.g. 'down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
           "attention_blocks.0.pos_encoder.pe' (1, 16, 32) (expected (1, 24, 32))"),
    ("motion_only", "a motion module alone (give it as motion_module)"),
])
def test_the_ckpt_path_is_loaded_strictly(files, tmp_path, monkeypatch, capsys, edit, problem):
    _, sd = files
    sd = dict(sd)
    if edit == "drop":
        del sd["conv_in.weight"]
    elif edit == "extra":
        sd["extra.weight"] = np.zeros(2, np.float32)
    elif edit == "pe":
        sd = {k: v[:, :16] if k.endswith("pos_encoder.pe") else v for k, v in sd.items()}
    else:
        sd = {k: v for k, v in sd.items() if ".motion_modules." in k}
    path = tmp_path / "u.ckpt"
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, str(path))
    code, line = _run_config(tmp_path, monkeypatch, capsys, path)
    assert code == 1 and line.startswith(f"error: {path}: ") and problem in line, line
