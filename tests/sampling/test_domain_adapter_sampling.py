"""AnimateDiff v3 with its domain adapter, end to end: a tiny random base, a v3-layout motion module and
an adapter file in the original format, sampled through the CLI, against the same run on a base whose
UNet weights were fused with the adapter by hand in NumPy."""
import os
import shutil
import textwrap

import numpy as np
import pytest
import torch
import yaml

from animatediff_jax import loading, sample
from tests.sampling import tiny_models as tm

SCALE = 0.7
KW = dict(width=32, height=32, frames=4, steps=2, guidance_scale=7.5, progress=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from safetensors.numpy import load_file, save_file
    root = tmp_path_factory.mktemp("v3")
    tm.write_base_folder(str(root / "base"))
    tm.write_v3_motion_module(str(root / "v3_mm.safetensors"))
    adapter = tm.domain_adapter_state_dict()
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in adapter.items()}}, root / "v3_adapter.ckpt")
    # the reference base: W += scale * up @ down on each adapted projection, in NumPy (float64)
    shutil.copytree(root / "base", root / "fused")
    unet_file = root / "fused" / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(unet_file))
    fused = 0
    for key, down in adapter.items():
        if key.endswith(".down.weight"):
            attn, target = key.split(".processor.")
            target = target.split("_lora")[0]
            name = f"{attn}.{'to_out.0' if target == 'to_out' else target}.weight"
            up = adapter[key.replace(".down.", ".up.")].astype(np.float64)
            weights[name] = (weights[name] + SCALE * up @ down.astype(np.float64)).astype(np.float32)
            fused += 1
    assert fused == len(adapter) // 2 == 32  # 4 transformer blocks x (attn1, attn2) x (q, k, v, out)
    save_file(weights, str(unet_file))
    return root


def _load(root, base, adapter=None):
    return loading.load_pipeline(str(root / base), motion_module=str(root / "v3_mm.safetensors"),
                                    domain_adapter=adapter, dtype="float32", cache_dir=str(root / "cache"))


def test_domain_adapter_through_the_cli_equals_hand_fused_weights(files, monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(files / "cache"))
    cfg = tmp_path / "v3.yaml"
    cfg.write_text(textwrap.dedent(f"""
        - inference_config: "configs/inference/inference-v3.yaml"
          motion_module: "{files / 'v3_mm.safetensors'}"
          adapter_lora_path: "{files / 'v3_adapter.ckpt'}"
          adapter_lora_scale: {SCALE}
          seed: 9
          steps: 2
          prompt: ["aerial view, a forest"]
          n_prompt: ["worst quality"]
        """))
    out = tmp_path / "out"
    assert sample.main([str(cfg), "--base", str(files / "base"), "--out", str(out), "--W", "32", "--H", "32",
                        "--L", "4", "--no-progress", "--save-npy"]) == 0
    (run,) = os.listdir(out)
    got = np.load(out / run / "sample" / "0-aerial-view-a-forest.npy")
    assert yaml.safe_load((out / run / "config.yaml").read_text())[0]["adapter_lora_scale"] == SCALE
    ref = _load(files, "fused")
    assert ref.description["motion_version"] == "v3"
    want = ref(["aerial view, a forest"], ["worst quality"], seeds=[9], **KW).frames[0]
    err = np.abs(got - want).max()
    print(f"domain adapter via CLI vs hand-fused base: frames max abs diff {err:.2e}")
    assert err <= 1e-5
    plain = _load(files, "base")(["aerial view, a forest"], ["worst quality"], seeds=[9], **KW).frames[0]
    assert np.abs(plain - want).max() > 100 * max(err, 1e-7)  # the adapter changes the video


def test_scale_zero_is_no_adapter(files):
    args = (["a boat"], ["blurry"])
    none = _load(files, "base")(*args, seeds=[3], **KW)
    zero = _load(files, "base", (str(files / "v3_adapter.ckpt"), 0.0))(*args, seeds=[3], **KW)
    np.testing.assert_array_equal(zero.latents, none.latents)
    np.testing.assert_array_equal(zero.frames, none.frames)
