"""`python -m convert controlnet SOURCE OUTPUT`: writes Flax params that load back equal, refuses an
existing output without --overwrite, bad flags (exit 2) and bad inputs (exit 1) in one line."""
import json
import os
import subprocess
import sys

import numpy as np

from animatediff_jax.checkpoint import read_metadata
from animatediff_jax.params import flatten
from convert.__main__ import main
from convert.controlnet import load_controlnet
from convert.naming import state_dict_to_flax
from tests.convert import controlnet_fixtures as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_convert_ldm_file_and_sparsectrl(tmp_path, capsys):
    model = F.controlnet("small")
    sd = F.state_dict(model)
    src = F.save_torch(F.to_ldm(sd, 1), str(tmp_path / "control_v11p_sd15_canny.pth"))
    out = str(tmp_path / "canny.safetensors")
    assert main(["controlnet", src, out, "--overrides", json.dumps(F.HIDDEN), "--dtype", "float16"]) == 0
    assert "canny.safetensors: controlnet, blocks [32, 64], condition 3 channels at 1/8 latent scale" in \
        capsys.readouterr().out
    meta = read_metadata(out)
    assert (meta["config_class"], meta["kind"], meta["dtype"]) == ("ControlNetConfig", "controlnet", "float16")
    assert meta["source"] == f"controlnet-ldm-pth:{src}"
    net = load_controlnet(out)
    want, have = flatten(state_dict_to_flax(sd)), flatten(net.params)
    assert set(have) == set(want)
    assert all(np.array_equal(np.asarray(have[p]), want[p].astype(np.float16)) for p in want)

    assert main(["controlnet", src, out]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["controlnet", src, out, "--overrides", "{bad"]) == 2
    assert "error: --overrides: not valid JSON" in capsys.readouterr().err

    sparse = F.save_torch(F.to_original_sparsectrl(F.state_dict(F.sparsectrl("scribble"))),
                          str(tmp_path / "v3_sd15_sparsectrl_scribble.ckpt"))
    out2 = str(tmp_path / "scribble.safetensors")
    assert main(["controlnet", sparse, out2]) == 0
    assert "sparsectrl" in capsys.readouterr().out
    meta = read_metadata(out2)
    assert json.loads(meta["motion"])["double_self_attention"] is False
    assert meta["source"].startswith("sparsectrl-original-ckpt:")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    src = F.save_safetensors({"w": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    assert main(["controlnet", src, str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {src}: not a ControlNet or SparseCtrl file")
    assert sorted(os.listdir(tmp_path)) == ["other.safetensors"]


def test_help():
    result = subprocess.run([sys.executable, "-m", "convert", "controlnet", "--help"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m convert controlnet" in result.stdout
