"""Bad base-model input: SD2 / SDXL files, missing / unexpected / mis-shaped keys, absent EMA or
networks — each refused with the file named and a few example keys; no output half-written."""
import os

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convert import io as convert_io
from convert.__main__ import main
from convert.base import convert_base, load_base
from convert.detect import model_family, require_sd1
from convert.io import CheckpointError
from tests.convert.ldm_fixtures import build, ldm_state_dict, save_single_file

U = "model.diffusion_model."


@pytest.fixture(scope="module")
def sd():
    return ldm_state_dict(*build("small"))


def _write(tmp_path, state, name="m.safetensors"):
    return save_single_file(str(tmp_path / name), state)


def test_sd2_file_is_refused(tmp_path):
    state = {"cond_stage_model.model.token_embedding.weight": np.zeros((8, 4), np.float32),
             U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": np.zeros((320, 1024), np.float32)}
    with pytest.raises(CheckpointError, match=r"sd2\.safetensors: not a Stable Diffusion 1\.x model: .*2\.x"):
        load_base(_write(tmp_path, state, "sd2.safetensors"), progress=False)
    # 1024-dim cross-attention alone (OpenCLIP text encoder stripped) is SD2 as well
    shapes = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}
    assert model_family(shapes, shapes.__getitem__) == "sd2"


def test_sdxl_file_is_refused(tmp_path):
    state = {"conditioner.embedders.1.model.positional_embedding": np.zeros((77, 8), np.float32),
             U + "label_emb.0.0.weight": np.zeros((8, 8), np.float32)}
    with pytest.raises(CheckpointError, match=r"xl\.ckpt: not a Stable Diffusion 1\.x model: .*XL"):
        load_base(_write(tmp_path, state, "xl.ckpt"), progress=False)
    shapes = {"add_embedding.linear_1.weight": (1280, 2816)}
    with pytest.raises(CheckpointError, match="XL"):
        require_sd1(shapes, shapes.__getitem__, "unet")


def test_missing_keys_are_listed(tmp_path, sd):
    state = {k: v for k, v in sd.items() if "output_blocks.1.0.out_layers.3" not in k and "attn1.to_q" not in k}
    with pytest.raises(CheckpointError, match=r"m\.safetensors: the unet does not match.*missing \(.*'up_blocks_0/resnets_1/conv2/"):
        load_base(_write(tmp_path, state), progress=False)


def test_unexpected_keys_are_listed(tmp_path, sd):
    state = dict(sd)
    state[U + "input_blocks.1.1.transformer_blocks.0.attn3.to_q.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"1 unexpected \('model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn3"):
        load_base(_write(tmp_path, state), progress=False)
    state = dict(sd)
    state["control_model.zero_convs.0.0.weight"] = np.zeros((4, 4), np.float32)
    state[U + "input_blocks.1.9.weight"] = np.zeros((4,), np.float32)
    with pytest.raises(CheckpointError, match=r"2 unexpected keys .*'control_model.zero_convs.0.0.weight'.*input_blocks\.1\.9"):
        load_base(_write(tmp_path, state), progress=False)


def test_shape_mismatch_is_reported(tmp_path, sd):
    state = dict(sd)
    key = "first_stage_model.encoder.conv_in.weight"
    state[key] = np.zeros((32, 3, 5, 5), np.float32)
    with pytest.raises(CheckpointError, match=r"the vae does not match.*wrong shape.*encoder.conv_in.weight \(5, 5, 3, 32\) \(expected \(3, 3, 3, 32\)\)"):
        load_base(_write(tmp_path, state), progress=False)


def test_an_integer_weight_is_refused_and_float8_is_cast(tmp_path, sd):
    """An integer tensor in a weight's place (a damaged or quantised file) is named, not stored as an
    integer param; float8 is a float: `--dtype` casts it like any other (it was kept as float8)."""
    state = dict(sd)
    key = U + "out.2.bias"
    state[key] = np.arange(state[key].size, dtype=np.int64)
    with pytest.raises(CheckpointError, match=rf"the unet does not match.*1 not floating point: '{key} \(int64\)'"):
        load_base(_write(tmp_path, state), progress=False)
    f8 = str(tmp_path / "f8.safetensors")
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float8_e4m3fn) for k, v in sd.items()}, f8)
    base = load_base(f8, dtype="float16", progress=False)
    assert {np.asarray(leaf).dtype for leaf in jax.tree.leaves((base.unet, base.vae, base.text_encoder))} == \
        {np.dtype(np.float16)}


def test_absent_ema_or_network(tmp_path, sd):
    path = _write(tmp_path, sd)
    with pytest.raises(CheckpointError, match=r"m\.safetensors: EMA weights requested but .*missing"):
        load_base(path, ema=True, progress=False)
    no_vae = {k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}
    with pytest.raises(CheckpointError, match=r"nv\.safetensors: no vae weights .*first_stage_model\."):
        load_base(_write(tmp_path, no_vae, "nv.safetensors"), progress=False)


def test_failed_conversion_writes_nothing(tmp_path, sd, monkeypatch):
    path = _write(tmp_path, sd)
    out = tmp_path / "out"
    real = convert_io.SafetensorsStateDict.view
    calls = {"n": 0}

    def flaky(self, key):
        calls["n"] += 1
        if calls["n"] == 50:
            raise OSError(f"{self.path}: read error")
        return real(self, key)

    monkeypatch.setattr(convert_io.SafetensorsStateDict, "view", flaky)
    with pytest.raises(OSError, match="read error"):
        convert_base(path, str(out), progress=False)
    assert calls["n"] == 50
    assert not out.exists() or os.listdir(out) == []
    monkeypatch.setattr(convert_io.SafetensorsStateDict, "view", real)
    written = convert_base(path, str(out), progress=False)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in written.values())


MINI = os.path.join(os.path.dirname(__file__), "..", "..", "animatediff_jax", "assets", "miniature")


def _convert_error(capsys, source, out) -> str:
    assert main(["base", source, str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not os.path.exists(out), err
    return err


@pytest.mark.parametrize("state, what, use", [
    ({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": np.ones(4, np.float32)},
     "an AnimateDiff motion module", "--motion-module (python -m animatediff_jax.sample), or convert it with "
                                     "`python -m convert motion`"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.ones((2, 4), np.float32)},
     "a LoRA", "--lora (python -m animatediff_jax.sample), or apply it to a converted base with "
               "`python -m convert lora`")])
def test_another_kind_of_file_names_what_it_is_and_where_it_goes(tmp_path, capsys, state, what, use):
    path = _write(tmp_path, state)
    assert _convert_error(capsys, path, tmp_path / "out") == \
        f"error: {path}: this is {what}, not a Stable Diffusion model; pass it with {use}\n"


def test_an_already_converted_folder_is_named_usable_as_it_is(tmp_path, capsys):
    base = os.path.join(MINI, "base")
    err = _convert_error(capsys, base, tmp_path / "out")
    assert err.startswith(f"error: {base}: already a converted SD1.x model folder") and f"--base {base}" in err
    motion = os.path.join(MINI, "motion_module_B.safetensors")
    assert "sample's --motion-module takes it" in _convert_error(capsys, motion, tmp_path / "out")
