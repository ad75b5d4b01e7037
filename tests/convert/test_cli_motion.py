"""`python -m convert motion | lora | motion-lora | export-motion` end to end on tiny files."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter

from animatediff_jax.checkpoint import load_params, read_metadata, save_params
from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.models.configs import CLIPTextConfig, UNetConfig
from animatediff_jax.params import flatten
from convert.__main__ import main
from convert.lora import apply_lora_files, fuse_motion_loras
from tests.convert.lora_helpers import flax_params, kohya_state_dict, save, tiny_text_encoder, tiny_unet
from tests.convert.motion_helpers import adapter_flax, original_state_dict, random_adapter, write_original
from tests.convert.test_lora_motion import motion_lora
from tests.utils import cache_repo


def assert_trees_equal(a, b):
    a, b = flatten(a), flatten(b)
    assert set(a) == set(b)
    for p in b:
        np.testing.assert_array_equal(np.asarray(a[p]), np.asarray(b[p]), err_msg="/".join(p))


@pytest.fixture(scope="module")
def v2_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    adapter = random_adapter("v2", (32, 64), 1)
    write_original(original_state_dict(adapter), d / "mm_v2.ckpt", wrapper=True)
    return adapter, d / "mm_v2.ckpt"


def test_motion_motion_lora_and_export(tmp_path, v2_file, capsys):
    adapter, src = v2_file
    out = tmp_path / "mm.safetensors"
    assert main(["motion", str(src), str(out), "--heads", "2", "--norm-groups", "8"]) == 0
    assert "v2" in capsys.readouterr().out
    params, meta = load_params(str(out))
    assert_trees_equal(params, adapter_flax(adapter))
    assert json.loads(meta["config"])["max_seq_length"] == 32 and json.loads(meta["motion"])["version"] == "v2"

    torch.save(motion_lora(adapter, 1), tmp_path / "zoom.ckpt")
    torch.save(motion_lora(adapter, 2), tmp_path / "pan.ckpt")
    fused_path = tmp_path / "mm_zoom.safetensors"
    assert main(["motion-lora", str(out), str(fused_path), "--lora", f"{tmp_path / 'zoom.ckpt'}:0.8",
                 "--lora", f"{tmp_path / 'pan.ckpt'}:0.3"]) == 0
    want = fuse_motion_loras(params, [(tmp_path / "zoom.ckpt", 0.8), (tmp_path / "pan.ckpt", 0.3)])
    assert_trees_equal(load_params(str(fused_path))[0], want)

    assert main(["export-motion", str(out), str(tmp_path / "exported.ckpt")]) == 0
    assert main(["export-motion", str(out), str(tmp_path / "adapter"), "--format", "diffusers"]) == 0
    adapter.save_config(tmp_path / "cfg")
    for loaded in (MotionAdapter.from_single_file(str(tmp_path / "exported.ckpt"), config=str(tmp_path / "cfg")),
                   MotionAdapter.from_pretrained(tmp_path / "adapter")):
        for k, v in adapter.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=1e-5 if k.endswith(".pe") else 0)


def test_lora_into_converted_base(tmp_path):
    unet, te = tiny_unet(), tiny_text_encoder()
    base = tmp_path / "base"
    save_params(str(base / "unet.safetensors"), flax_params(unet), config=UNetConfig.from_dict(dict(unet.config)))
    save_params(str(base / "text_encoder.safetensors"), flax_params(te), config=CLIPTextConfig(hidden_size=32, num_attention_heads=2))
    save_params(str(base / "vae.safetensors"), {"x": {"kernel": np.ones((2, 2), np.float32)}})
    (base / "scheduler_config.json").write_text("{}")
    save(kohya_state_dict(unet, te, seed=1), tmp_path / "a.safetensors")
    save(kohya_state_dict(unet, None, seed=2, locon=False), tmp_path / "b.safetensors")
    loras = [(str(tmp_path / "a.safetensors"), 0.6), (str(tmp_path / "b.safetensors"), 1.0)]
    assert main(["lora", str(base), str(tmp_path / "out"), "--lora", f"{loras[0][0]}:0.6", "--lora", loras[1][0]]) == 0
    want = apply_lora_files({"unet": flax_params(unet), "text_encoder": flax_params(te)}, loras)
    assert_trees_equal(load_params(str(tmp_path / "out" / "unet.safetensors"))[0], want["unet"])
    assert_trees_equal(load_params(str(tmp_path / "out" / "text_encoder.safetensors"))[0], want["text_encoder"])
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(base))
    # a single UNet params file: the LoRA's text-encoder part is skipped
    assert main(["lora", str(base / "unet.safetensors"), str(tmp_path / "unet_only.safetensors"),
                 "--lora", f"{loras[0][0]}:0.6", "--lora", loras[1][0]]) == 0
    assert_trees_equal(load_params(str(tmp_path / "unet_only.safetensors"))[0], want["unet"])


def test_lora_inputs_take_hub_ids(tmp_path, v2_file, hub_cache, capsys):
    """`lora --lora` and `motion-lora --lora` take a LoRA repo's hub id as `sample --lora` does (diffusers'
    pytorch_lora_weights.*, the hub MotionLoRAs' one diffusion_pytorch_model.*): the same result as the
    file; the fused file names the id; an id not in the cache is the hub's one-line error."""
    unet = tiny_unet()
    save_params(str(tmp_path / "unet.safetensors"), flax_params(unet), config=UNetConfig.from_dict(dict(unet.config)))
    save(kohya_state_dict(unet, None, seed=1), tmp_path / "a.safetensors")
    cache_repo(hub_cache, "org/style", lambda d: (os.makedirs(d), shutil.copy(
        tmp_path / "a.safetensors", os.path.join(d, "pytorch_lora_weights.safetensors"))))
    assert main(["lora", str(tmp_path / "unet.safetensors"), str(tmp_path / "hub.safetensors"),
                 "--lora", "org/style:0.6"]) == 0
    want = apply_lora_files({"unet": flax_params(unet)}, [(str(tmp_path / "a.safetensors"), 0.6)])
    assert_trees_equal(load_params(str(tmp_path / "hub.safetensors"))[0], want["unet"])
    assert json.loads(read_metadata(str(tmp_path / "hub.safetensors"))["loras"]) == [["org/style", 0.6]]
    adapter, src = v2_file
    mm = tmp_path / "mm.safetensors"
    assert main(["motion", str(src), str(mm), "--heads", "2", "--norm-groups", "8"]) == 0
    lora = motion_lora(adapter, 1, diffusers_format=True)
    cache_repo(hub_cache, "org/zoom", lambda d: (os.makedirs(d), save(lora, os.path.join(
        d, "diffusion_pytorch_model.safetensors"))))
    save(lora, tmp_path / "zoom.safetensors")
    for given, out in (("org/zoom:0.8", "by_id"), (f"{tmp_path / 'zoom.safetensors'}:0.8", "by_file")):
        assert main(["motion-lora", str(mm), str(tmp_path / f"{out}.safetensors"), "--lora", given]) == 0
    assert_trees_equal(load_params(str(tmp_path / "by_id.safetensors"))[0],
                       load_params(str(tmp_path / "by_file.safetensors"))[0])
    capsys.readouterr()
    for argv in (["lora", str(tmp_path / "unet.safetensors"), str(tmp_path / "x.safetensors")],
                 ["motion-lora", str(mm), str(tmp_path / "x.safetensors")]):
        assert main([*argv, "--lora", "org/absent"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: org/absent: no such local file or folder, and hub id 'org/absent' (revision "
                              f"main) is not in the Hugging Face cache {hub_cache}") and err.count("\n") == 1, err
    assert main(["lora", str(tmp_path / "unet.safetensors"), str(tmp_path / "x.safetensors"), "--lora", "org/zoom"]) == 1
    assert capsys.readouterr().err.startswith("error: org/zoom: a MotionLoRA (it targets motion_modules")  # the id
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_input_exits_cleanly(tmp_path, v2_file, capsys):
    adapter, src = v2_file
    out = tmp_path / "mm.safetensors"
    assert main(["motion", str(src), str(out), "--heads", "2", "--norm-groups", "8"]) == 0
    torch.save(motion_lora(adapter, 1), tmp_path / "zoom.ckpt")
    capsys.readouterr()
    assert main(["motion-lora", str(out), str(tmp_path / "x.safetensors"), "--lora", f"{tmp_path / 'zoom.ckpt'}:big"]) == 2  # usage
    assert "scale 'big' is not a number" in capsys.readouterr().err
    assert main(["motion-lora", str(out), str(tmp_path / "x.safetensors"), "--lora", str(tmp_path / "nope.ckpt")]) == 1
    assert "nope.ckpt: no such file or folder" in capsys.readouterr().err
    v3 = random_adapter("v3", (32, 64), 1)
    write_original(original_state_dict(v3), tmp_path / "v3.ckpt")
    assert main(["motion-lora", str(tmp_path / "v3.ckpt"), str(tmp_path / "x.safetensors"), "--heads", "2",
                 "--norm-groups", "8", "--lora", str(tmp_path / "zoom.ckpt")]) == 1
    assert "trained for a v2 motion module" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["mm.safetensors", "v3.ckpt", "zoom.ckpt"]  # nothing half-written


@pytest.mark.parametrize("command", ["motion", "lora", "motion-lora", "export-motion"])
def test_help(command):
    result = subprocess.run([sys.executable, "-m", "convert", command, "--help"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0, result.stderr
    assert "usage: python -m convert " + command in result.stdout


@pytest.mark.parametrize("name, line", [
    ("motion_lora_right.safetensors", "this is a motion LoRA, not a motion module; pass it with --motion-lora beside its "
                                      "motion module (python -m animatediff_jax.sample), or fuse it into a motion module "
                                      "with `python -m convert motion-lora`"),  # was "missing key down_blocks.0..."
    ("lora_checker.safetensors", "this is a LoRA, not a motion module; pass it with --lora (python -m "
                                 "animatediff_jax.sample), or apply it to a converted base with `python -m convert lora`"),
])
def test_a_lora_given_to_convert_motion_is_named_as_what_it_is(tmp_path, capsys, name, line):
    path = os.path.join(MINIATURE, name)
    assert main(["motion", path, str(tmp_path / "m.safetensors")]) == 1
    assert capsys.readouterr().err == f"error: {path}: {line}\n"
    assert not (tmp_path / "m.safetensors").exists()
