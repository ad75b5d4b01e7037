"""`python -m convert`: --help on every command; base -> Flax files, inspect, merge, export-unet (the
exported folder loads in diffusers with identical tensors); errors end cleanly, naming the file."""
import json
import os
import subprocess
import sys

import torch

from animatediff_jax.checkpoint import load_params
from convert.__main__ import build_parser, main
from tests.convert.ldm_fixtures import build, ldm_state_dict, save_folder, save_single_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_on_every_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"base", "merge", "inspect", "export-unet"} <= set(commands)
    for name in ["", *commands]:
        r = subprocess.run([sys.executable, "-m", "convert", *([name] if name else []), "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage: python -m convert" in r.stdout, (name, r.stderr[-500:])


def test_base_inspect_merge_export(tmp_path, capsys):
    from diffusers import UNet2DConditionModel
    u, v, t = build("small")
    src = save_single_file(str(tmp_path / "model.ckpt"), ldm_state_dict(u, v, t), wrap=True)
    out = str(tmp_path / "flax")
    assert main(["base", src, out, "--dtype", "bfloat16", "-q"]) == 0
    assert sorted(os.listdir(out)) == ["scheduler_config.json", "text_encoder.safetensors", "unet.safetensors",
                                       "vae.safetensors"]
    params, meta = load_params(os.path.join(out, "vae.safetensors"))
    assert meta["config_class"] == "VAEConfig" and meta["dtype"] == "bfloat16"
    assert meta["source"].startswith("ldm-ckpt:")

    capsys.readouterr()
    assert main(["inspect", "--json", src, os.path.join(out, "unet.safetensors")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["kind"] == "ldm" and lines[0]["family"] == "sd1" and lines[0]["format"] == "pickle (ckpt)"
    assert lines[0]["parameters"] == sum(p.numel() for m in (u, v, t) for p in m.state_dict().values())
    assert lines[1]["kind"] == "flax" and lines[1]["dtypes"] == {"bfloat16": lines[1]["tensors"]}
    folder = save_folder(str(tmp_path / "folder"), u, v, t, safe=False)
    assert main(["inspect", "--json", folder]) == 0
    kinds = [json.loads(x)["kind"] for x in capsys.readouterr().out.splitlines()]
    assert kinds == ["diffusers_unet", "diffusers_vae", "clip_text"]

    assert main(["base", src, str(tmp_path / "f32"), "-q"]) == 0
    from animatediff_jax.params import flatten

    from convert.base import load_base
    in_memory = load_base(src, progress=False)
    for name in ("unet", "vae", "text_encoder"):  # streamed files == the in-memory conversion, bit for bit
        streamed = flatten(load_params(str(tmp_path / "f32" / f"{name}.safetensors"))[0])
        direct = flatten(getattr(in_memory, name))
        assert streamed.keys() == direct.keys()
        assert all(streamed[k].dtype == direct[k].dtype and (streamed[k] == direct[k]).all() for k in direct), name
    merged = str(tmp_path / "merged.safetensors")
    unet32 = str(tmp_path / "f32" / "unet.safetensors")
    assert main(["merge", merged, unet32, unet32, "--weights", "0.25", "0.75", "-q"]) == 0
    exported = str(tmp_path / "exported_unet")
    assert main(["export-unet", merged, exported]) == 0
    theirs = UNet2DConditionModel.from_pretrained(exported).state_dict()
    ours = u.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:  # 0.25 x + 0.75 x == x up to one float32 rounding
        torch.testing.assert_close(theirs[k], ours[k], rtol=1e-6, atol=1e-7)


def test_errors_are_one_clean_line(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    assert main(["base", str(bad), str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "broken.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "unet.safetensors").exists()
    good = save_single_file(str(tmp_path / "good.safetensors"), ldm_state_dict(*build("small")))
    assert main(["base", good, str(tmp_path / "out"), "-q", "--overrides", '{"unet": {"heads": 3}}']) == 1
    assert "good.safetensors: bad unet config override" in capsys.readouterr().err
    assert main(["merge", "o.safetensors", "a", "b", "c", "--add-difference", "lots"]) == 2  # not a number
    assert capsys.readouterr().err == "error: --add-difference: invalid float value: 'lots'\n"
