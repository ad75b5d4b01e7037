"""NaN/Inf weights (issue 13, kind 6): `python -m convert base | motion | lora | merge` refuse them by
tensor name, writing nothing (`--allow-nonfinite` writes with a warning naming them); loaders that
touch the data (a cast, a device put) warn by name."""
import os
import re

import numpy as np
import pytest
import torch

from animatediff_jax.checkpoint import load_params, save_params
from animatediff_jax.errors import InputError
from animatediff_jax.nonfinite import find_nonfinite
from convert.__main__ import main
from convert.lora import apply_lora_files
from tests.convert.lora_helpers import flax_params, kohya_state_dict, processor_state_dict, save, tiny_unet
from tests.convert.test_lora_motion import motion_lora
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
    assert _line(capsys) == (f"error: {tmp_path / 'l.safetensors'}: 1 tensor holds NaN/Inf: '{first}' (NaN); "
                             "refusing to write it (pass --allow-nonfinite to write it anyway)")  # the LoRA's own key
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


# ----------------------------------------------------------------------------- LoRAs (issue 13.6): named by key

def _motion_lora_file(tmp_path):
    """A v2 motion module (converted) and a MotionLoRA (original processor layout) with one Inf factor."""
    adapter = random_adapter("v2", (32, 64), 1)
    write_original(original_state_dict(adapter), tmp_path / "mm.ckpt")
    assert main(["motion", str(tmp_path / "mm.ckpt"), str(tmp_path / "mm.safetensors"), "--heads", "2",
                 "--norm-groups", "8", "-q"]) == 0
    sd = motion_lora(adapter, seed=3)
    key = sorted(k for k in sd if k.endswith("to_v_lora.down.weight"))[0]
    sd[key][1, 1] = float("-inf")
    save(sd, tmp_path / "ml.safetensors")
    return str(tmp_path / "mm.safetensors"), str(tmp_path / "ml.safetensors"), key


def test_convert_motion_lora_names_the_motion_loras_tensors(tmp_path, capsys):
    mm, ml, key = _motion_lora_file(tmp_path)
    capsys.readouterr()
    out = str(tmp_path / "fused.safetensors")
    assert main(["motion-lora", mm, out, "--lora", ml]) == 1
    assert _line(capsys) == (f"error: {ml}: 1 tensor holds NaN/Inf: '{key}' (Inf); refusing to write it "
                             "(pass --allow-nonfinite to write it anyway)")
    assert not os.path.exists(out)
    assert main(["motion-lora", mm, out, "--lora", ml, "--allow-nonfinite"]) == 0
    assert f"warning: {ml}: 1 tensor holds NaN/Inf: '{key}' (Inf)" in _lines(capsys)


def test_export_motion_lora_refuses_nonfinite_factors_by_name(tmp_path, capsys):
    factors = {"lora": {"down_blocks_0.motion_modules_0.transformer_blocks_0.attn1.to_q.kernel":
                        {"down": np.ones((2, 32), np.float32), "up": np.full((32, 2), np.nan, np.float32)}}}
    save_params(str(tmp_path / "f.safetensors"), factors)
    out = str(tmp_path / "ml.ckpt")
    assert main(["export-motion-lora", str(tmp_path / "f.safetensors"), out]) == 1
    line = _line(capsys)
    assert line.startswith(f"error: {tmp_path / 'f.safetensors'}: 1 tensor holds NaN/Inf: 'lora/")
    assert "attn1.to_q.kernel/up' (NaN)" in line and not os.path.exists(out)


@pytest.mark.parametrize("layout", ["kohya", "diffusers", "peft"])
def test_lora_readers_warn_or_refuse_by_name_in_every_layout(tmp_path, capsys, layout):
    """The readers every LoRA path goes through (sample --lora/--motion-lora/--domain-adapter and convert):
    a warning naming the file and key when loading, an InputError naming them for converters."""
    unet = tiny_unet()
    params = flax_params(unet)
    if layout == "kohya":
        sd, path = kohya_state_dict(unet, None, seed=1, locon=False), tmp_path / "l.safetensors"
    elif layout == "diffusers":  # unet.<module>.lora_A / lora_B
        sd = {k.replace(".processor.", ".").replace("_lora.down.", ".lora_A.").replace("_lora.up.", ".lora_B.")
              .replace(".to_out.lora", ".to_out.0.lora"): v for k, v in processor_state_dict(unet, seed=1).items()}
        path = tmp_path / "l.safetensors"
    else:  # PEFT save_pretrained folder: adapter_model.safetensors + adapter_config.json
        sd = {k.replace("unet.", "base_model.model.", 1): v for k, v in
              processor_state_dict(unet, seed=1, prefix="unet.").items()}
        sd = {k.replace(".processor.", ".").replace("_lora.down.", ".lora_A.").replace("_lora.up.", ".lora_B.")
              .replace(".to_out.lora", ".to_out.0.lora"): v for k, v in sd.items()}
        path = tmp_path / "adapter"
        path.mkdir()
        (path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 4}')
    key = sorted(k for k in sd if "up" in k.rsplit(".", 2)[-2] or "lora_B" in k)[0]
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    save(sd, path / "adapter_model.safetensors" if layout == "peft" else path)
    weights = str(path / "adapter_model.safetensors") if layout == "peft" else str(path)
    fused = apply_lora_files({"unet": params}, [(str(path), 1.0)], skip_other=True)
    assert _lines(capsys) == [f"warning: {weights}: 1 tensor holds NaN/Inf: '{key}' (NaN)"]
    assert find_nonfinite(fused["unet"])  # a warning, not a refusal: the loader goes on
    with pytest.raises(InputError, match=rf"^{re.escape(weights)}: 1 tensor holds NaN/Inf: '{re.escape(key)}' \(NaN\); "
                                         "refusing"):
        apply_lora_files({"unet": params}, [(str(path), 1.0)], skip_other=True, allow_nonfinite=False)


def test_sample_lora_warns_by_name_and_refuses_before_sampling(tmp_path, monkeypatch, capsys):
    """`sample --lora` with a NaN tensor: the warning names the LoRA file and key when it is read, and the
    run is refused before sampling, since the fused weights would make every video NaN (the real loader;
    sampling replaced by a stand-in)."""
    from safetensors.numpy import load_file, save_file

    from animatediff_jax import sample
    from animatediff_jax.miniature.shipped import MINIATURE, paths
    from tests.sampling.test_sample_run_folder import StandInPipeline
    lora = load_file(paths(MINIATURE)["lora"])
    key = sorted(k for k in lora if k.endswith("lora_up.weight"))[0]
    lora[key][0, 0] = np.nan
    save_file(lora, str(tmp_path / "bad.safetensors"), metadata={"format": "pt"})
    real = sample.load_pipeline

    def load(job):
        real(job)
        return StandInPipeline()
    monkeypatch.setattr(sample, "load_pipeline", load)
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    assert sample.main(["--lora", str(tmp_path / "bad.safetensors"), "--prompt", "a red circle", "--steps", "1",
                        "--frames", "4", "--no-progress", "--out", str(tmp_path / "out")]) == 1
    lines = _lines(capsys)
    assert f"warning: {tmp_path / 'bad.safetensors'}: 1 tensor holds NaN/Inf: '{key}' (NaN)" in lines
    assert lines[-1].startswith(f"error: --lora {tmp_path / 'bad.safetensors'}:1 (fused into the ")
