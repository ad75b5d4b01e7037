"""`python -m convert` through `run_cli`: bad flags are one `error: <flag>: ...` line with exit 2, tensors
of the wrong rank in an input one `error: <file>: ...` line with exit 1 (no traceback)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animatediff_jax import sample
from convert.__main__ import main
from tests.convert import controlnet_fixtures as F
from tests.convert.motion_helpers import original_state_dict, random_adapter, write_original
from tests.robustness.convert_fixtures import flax_file, tiny_ldm
from tests.sampling.tiny_models import write_base_folder


def _line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("extra,message", [
    (["--add-difference", "0.5"], "error: --add-difference: needs exactly three inputs A B C, got 2"),
    (["--weights", "1"], "error: --weights: one weight per input: 2 inputs, 1 weights"),
    (["--weights", "nan", "1"], "error: --weights: must be finite numbers, got [nan, 1.0]"),
    (["--weights", "-1", "-1"], "error: --weights: must be ≥ 0 and not all 0, got [-1.0, -1.0] "
                                "(for A + S*(B - C) use --add-difference S)"),
    (["--weights", "-0.5", "1.5"], "error: --weights: must be ≥ 0 and not all 0, got [-0.5, 1.5] "
                                   "(for A + S*(B - C) use --add-difference S)"),
    (["--weights", "0", "0"], "error: --weights: must be ≥ 0 and not all 0, got [0.0, 0.0] "
                              "(for A + S*(B - C) use --add-difference S)"),
])
def test_merge_flag_errors_exit_2(tmp_path, capsys, extra, message):
    a = flax_file(str(tmp_path / "a.safetensors"), 1.0)
    assert main(["merge", str(tmp_path / "m.safetensors"), a, a, *extra]) == 2
    assert _line(capsys) == message


def test_bad_overrides_json_exits_2(tmp_path, capsys):
    assert main(["base", str(tmp_path / "x.ckpt"), str(tmp_path / "out"), "--overrides", "{nope"]) == 2
    assert _line(capsys).startswith("error: --overrides: not valid JSON")


def test_wrong_rank_tensors_name_the_file(tmp_path, capsys):
    key = "model.diffusion_model.input_blocks.0.0.weight"
    src = tiny_ldm(str(tmp_path / "scalar.safetensors"), edit=lambda sd: sd.__setitem__(key, np.float32(1.0)))
    assert main(["base", src, str(tmp_path / "out"), "-q"]) == 1
    assert _line(capsys) == (f"error: {src}: cannot infer the UNet config: a key tensor has the wrong number "
                             "of dimensions")
    sd = original_state_dict(random_adapter("v2", (32, 64), 1))
    pe = next(k for k in sorted(sd) if k.endswith("pos_encoder.pe"))
    sd[pe] = sd[pe].reshape(-1)
    write_original(sd, tmp_path / "mm.ckpt")
    assert main(["motion", str(tmp_path / "mm.ckpt"), str(tmp_path / "mm.safetensors"), "-q"]) == 1
    assert _line(capsys).startswith(f"error: {tmp_path / 'mm.ckpt'}: {pe} has shape (")


def _nonsense_config(folder, key, value="x"):
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json"


@pytest.mark.parametrize("kind,key,problem", [
    ("controlnet", "block_out_channels", "unsupported ControlNet config (ControlNetConfig: block_out_channels must be "
                                         "a list of integers, got 'x')"),
    ("base", "block_out_channels", "unusable config (UNetConfig: block_out_channels must be a list of integers, "
                                   "got 'x')"),
    ("base", "layers_per_block", "unusable config (UNetConfig: layers_per_block must be an integer, got 'x')"),
    ("motion", "motion_norm_num_groups", "motion_norm_num_groups must be a positive integer, got 'x'"),
    ("motion", "block_out_channels", "block_out_channels must be a positive integer or a list of them, got 'x'"),
])
def test_a_nonsense_config_value_is_one_line_naming_config_json(tmp_path, capsys, kind, key, problem):
    if kind == "controlnet":
        folder = Path(F.save_folder(F.controlnet(), str(tmp_path / "in")))
    elif kind == "base":
        folder = Path(write_base_folder(str(tmp_path / "in"))) / "unet"
    else:
        random_adapter().save_pretrained(str(tmp_path / "in"))
        folder = tmp_path / "in"
    config = _nonsense_config(folder, key)
    capsys.readouterr()  # the fixtures' progress bars
    out = tmp_path / ("out" if kind == "base" else "out.safetensors")  # base writes a folder
    assert main([kind, str(tmp_path / "in"), str(out)]) == 1
    assert _line(capsys) == f"error: {config}: {problem}"
    assert not out.exists()


@pytest.fixture(scope="module")
def diffusers_base(tmp_path_factory):
    return write_base_folder(str(tmp_path_factory.mktemp("base") / "base"))


@pytest.mark.parametrize("kind,file,problem", [
    ("base", "unet/config.json", "unusable config (not UTF-8 text (byte 0xe9 at offset 20))"),
    ("base", "scheduler/scheduler_config.json", "unusable scheduler config (not UTF-8 text (byte 0xe9 at offset 20))"),
    ("motion", "config.json", "not UTF-8 text (byte 0xe9 at offset 20)"),
])
def test_a_config_that_is_not_utf8_text_is_one_line_naming_it(tmp_path, capsys, diffusers_base, kind, file, problem):
    """A base's scheduler_config.json was a UnicodeDecodeError traceback; config.json files were read in the
    locale's encoding and answered with the codec's words (a MotionAdapter's: `not JSON (...)`)."""
    if kind == "base":
        shutil.copytree(diffusers_base, tmp_path / "in")
    else:
        random_adapter().save_pretrained(str(tmp_path / "in"))
    config = tmp_path / "in" / file
    config.write_bytes(b'{"_class_name": "caf\xe9"}')
    capsys.readouterr()  # the fixtures' progress bars
    out = tmp_path / ("out" if kind == "base" else "out.safetensors")
    assert main([kind, str(tmp_path / "in"), str(out), "-q"]) == 1
    assert _line(capsys) == f"error: {config}: {problem}"
    assert not out.exists()


def test_sample_names_a_nonsense_controlnet_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "cache"))
    folder = Path(F.save_folder(F.controlnet(), str(tmp_path / "cn")))
    config = _nonsense_config(folder, "block_out_channels")
    Image.new("RGB", (64, 64)).save(tmp_path / "x.gif")
    assert sample.main(["--controlnet", str(folder), "--control-video", str(tmp_path / "x.gif"), "--prompt", "p",
                        "--out", str(tmp_path / "o")]) == 1
    assert _line(capsys) == (f"error: --controlnet {folder}: {config}: unsupported ControlNet config (ControlNetConfig: "
                             "block_out_channels must be a list of integers, got 'x')")
