"""NaN/Inf weights (issue 13, kind 6): `python -m convert base | motion | lora | merge` refuse them by
tensor name, writing nothing (`--allow-nonfinite` writes with a warning naming them); loaders that
touch the data (a cast, a device put) warn by name."""
import os

import numpy as np
import pytest
import torch

from animatediff_jax.checkpoint import load_params, save_params
from animatediff_jax.nonfinite import find_nonfinite
from convert.__main__ import main
from tests.convert.lora_helpers import flax_params, kohya_state_dict, save, tiny_unet
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original
from tests.robustness.convert_fixtures import flax_file, snapshot, tiny_ldm

BAD_KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _line(capsys) -> str:
    lines = _lines(capsys)
    assert len(lines) == 1, lines
    return lines[0]


def _poison(sd):
    sd[BAD_KEY] = sd[BAD_KEY].copy()
    sd[BAD_KEY].reshape(-1)[3] = np.nan
    key = "first_stage_model.decoder.conv_out.bias"
    sd[key] = sd[key].copy()
    sd[key][0] = -np.inf


def test_convert_base_refuses_nonfinite_by_name(tmp_path, capsys):
    src = tiny_ldm(str(tmp_path / "nan.safetensors"), edit=_poison)
    out = tmp_path / "out"
    assert main(["base", src, str(out), "-q"]) == 1
    line = _line(capsys)
    assert line.startswith(f"error: {src}: 2 tensors hold NaN/Inf: ")
    assert f"'{BAD_KEY}' (NaN)" in line and "'first_stage_model.decoder.conv_out.bias' (Inf)" in line
    assert "--allow-nonfinite" in line
    assert sorted(os.listdir(tmp_path)) == ["nan.safetensors"]  # nothing written, no temp left

    assert main(["base", src, str(out), "-q", "--allow-nonfinite"]) == 0
    assert any(x.startswith(f"warning: {src}: 2 tensors hold NaN/Inf") for x in _lines(capsys))
    unet, _ = load_params(str(out / "unet.safetensors"))
    assert list(find_nonfinite(unet)) == ["down_blocks_0/resnets_0/conv1/kernel"]


def test_convert_merge_blames_the_input_or_the_merge(tmp_path, capsys):
    a = flax_file(str(tmp_path / "a.safetensors"), 1.0)
    bad = flax_file(str(tmp_path / "bad.safetensors"), 1.0, nan_at="b")
    out = str(tmp_path / "m.safetensors")
    assert main(["merge", out, a, bad, "-q"]) == 1
    assert _lines(capsys) == [f"error: {bad}: 1 tensor holds NaN/Inf: 'b/bias' (NaN); refusing to write it "
                              "(pass --allow-nonfinite to write it anyway)"]
    huge = flax_file(str(tmp_path / "huge.safetensors"), 1e5)  # finite, but over float16's range once cast
    assert main(["merge", out, huge, huge, "--dtype", "float16", "-q"]) == 1
    line = _line(capsys)
    assert line.startswith(f"error: {out}: 2 tensors hold NaN/Inf: 'a/kernel' (Inf), 'b/bias' (Inf)")
    assert not os.path.exists(out)
    assert main(["merge", out, a, bad, "-q", "--allow-nonfinite"]) == 0
    assert os.path.exists(out)


def test_convert_motion_and_lora_refuse_nonfinite(tmp_path, capsys):
    sd = original_state_dict(random_adapter("v2", (32, 64), 1))
    key = next(k for k in sorted(sd) if k.endswith("to_q.weight"))
    sd[key][0, 0] = float("inf")
    write_original(sd, tmp_path / "mm.ckpt")
    assert main(["motion", str(tmp_path / "mm.ckpt"), str(tmp_path / "mm.safetensors"), "--heads", "2",
                 "--norm-groups", "8", "-q"]) == 1
    line = _line(capsys)
    assert line.startswith(f"error: {tmp_path / 'mm.ckpt'}: 1 tensor holds NaN/Inf: 'down_blocks_0/motion_modules_0/")
    assert "to_q/kernel' (Inf)" in line

    unet = tiny_unet()
    save_params(str(tmp_path / "unet.safetensors"), flax_params(unet))
    lora = kohya_state_dict(unet, None, seed=1, locon=False)
    first = sorted(k for k in lora if k.endswith("lora_up.weight"))[0]
    lora[first][0, 0] = float("nan")
    save(lora, tmp_path / "l.safetensors")
    assert main(["lora", str(tmp_path / "unet.safetensors"), str(tmp_path / "fused.safetensors"),
                 "--lora", str(tmp_path / "l.safetensors")]) == 1
    line = _line(capsys)
    assert line.startswith(f"error: {tmp_path / 'unet.safetensors'} + LoRAs: 1 tensor holds NaN/Inf: ")
    assert "(NaN)" in line
    assert sorted(os.listdir(tmp_path)) == ["l.safetensors", "mm.ckpt", "unet.safetensors"]


def test_loaders_that_touch_the_data_warn_by_name(tmp_path, capsys):
    path = flax_file(str(tmp_path / "p.safetensors"), 1.0, nan_at="a")
    before = snapshot(path)
    load_params(path)  # zero-copy: nothing touched, nothing said
    assert _lines(capsys) == []
    for kwargs in ({"dtype": "float32"}, {"device": True}):
        params, _ = load_params(path, **kwargs)
        assert _lines(capsys) == [f"warning: {path}: 1 tensor holds NaN/Inf: 'a/kernel' (NaN)"]
    assert snapshot(path) == before
    with torch.no_grad():
        assert find_nonfinite({"x": np.array([1.0, np.inf]), "y": {"z": np.arange(3)}}) == {"x": "Inf"}


@pytest.mark.parametrize("n,words", [(1, "tensor holds"), (2, "tensors hold"), (7, "tensors hold")])
def test_message_grammar_and_length(n, words):
    from animatediff_jax.nonfinite import describe
    text = describe({f"t{i}": "NaN" for i in range(n)})
    assert text.startswith(f"{n} {words} NaN/Inf: 't0' (NaN)")
    assert text.endswith("(and 2 more)") == (n == 7)
