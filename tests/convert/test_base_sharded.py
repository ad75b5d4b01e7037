"""diffusers/transformers folders saved in shards (`*.safetensors.index.json`, `*.bin.index.json`, written
by their own `save_pretrained(max_shard_size=...)`) load exactly like the unsharded folder."""
import json
import os
import shutil

import numpy as np
import pytest
from diffusers import DDIMScheduler

from animatediff_jax.params import flatten
from convert.base import load_base
from convert.detect import describe
from convert.io import CheckpointError, ShardedStateDict, open_state_dict
from convert.naming import state_dict_to_flax
from tests.convert.ldm_fixtures import build, numpy_sd, save_folder

SHARD = "200KB"  # the small UNet is ~3.2 MB in float32: 18 shards


def save_sharded_folder(path: str, unet, vae, text, safe: bool = True) -> str:
    unet.save_pretrained(os.path.join(path, "unet"), max_shard_size=SHARD, safe_serialization=safe)
    vae.save_pretrained(os.path.join(path, "vae"), max_shard_size=SHARD, safe_serialization=safe)
    text.save_pretrained(os.path.join(path, "text_encoder"), max_shard_size=SHARD)
    DDIMScheduler(beta_schedule="scaled_linear").save_pretrained(os.path.join(path, "scheduler"))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("sharded")
    u, v, t = build("small")
    return (u, v, t), save_folder(str(d / "plain"), u, v, t), {
        "safetensors": save_sharded_folder(str(d / "sf"), u, v, t, safe=True),
        "bin": save_sharded_folder(str(d / "bin"), u, v, t, safe=False)}


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_folder_equals_unsharded(folders, kind):
    (u, _, _), plain, sharded = folders
    ext = "safetensors" if kind == "safetensors" else "bin"
    unet_dir = os.path.join(sharded[kind], "unet")
    assert os.path.isfile(os.path.join(unet_dir, f"diffusion_pytorch_model.{ext}.index.json"))
    assert len([f for f in os.listdir(unet_dir) if f.endswith("." + ext)]) > 2
    ours, ref = load_base(sharded[kind], progress=False), load_base(plain, progress=False)
    assert ours.source_format == f"diffusers-{kind}"
    for name in ("unet", "vae", "text_encoder"):
        a, b = flatten(getattr(ours, name)), flatten(getattr(ref, name))
        assert set(a) == set(b), name
        for p in b:
            np.testing.assert_array_equal(np.asarray(a[p]), np.asarray(b[p]), err_msg="/".join(p))
    assert ours.unet_config == ref.unet_config and ours.vae_config == ref.vae_config
    # and the weights are the torch models' own, through the one rename
    want = flatten(state_dict_to_flax(numpy_sd(u)))
    got = flatten(ours.unet)
    assert all(np.array_equal(np.asarray(got[p]), want[p]) for p in want)


def test_sharded_state_dict_streams_shard_by_shard(folders):
    index = os.path.join(folders[2]["safetensors"], "unet", "diffusion_pytorch_model.safetensors.index.json")
    weight_map = json.load(open(index))["weight_map"]
    with open_state_dict(index) as sd:
        assert isinstance(sd, ShardedStateDict) and set(sd) == set(weight_map)
        order = [weight_map[k] for k in sd]
    runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
    assert len(runs) == len(set(order)) > 2  # each shard's keys come together, each shard once
    info = describe(index)
    assert info["kind"] == "diffusers_unet" and info["format"] == f"safetensors, {len(runs)} shards"


def test_broken_index_names_the_file(folders, tmp_path):
    unet = shutil.copytree(os.path.join(folders[2]["safetensors"], "unet"), tmp_path / "unet")
    bad = unet / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(bad.read_text())
    original = index["weight_map"]["conv_in.weight"]
    index["weight_map"]["conv_in.weight"] = "diffusion_pytorch_model-00099-of-00099.safetensors"
    bad.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index.json: shard .*00099-of-00099.safetensors: no such file"):
        open_state_dict(str(bad))
    index["weight_map"]["conv_in.weight"] = "diffusion_pytorch_model-00002-of-00018.safetensors"
    bad.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index.json: 1 keys listed in the index are not in their shards"):
        open_state_dict(str(bad))
    # a key stored in two shards: which copy is meant is unknowable, so it is refused
    from safetensors.numpy import load_file, save_file
    index["weight_map"]["conv_in.weight"] = original
    bad.write_text(json.dumps(index))
    first = sorted(set(index["weight_map"].values()))[0]
    other = next(k for k, s in index["weight_map"].items() if s != first)
    tensors = load_file(str(unet / first))
    tensors[other] = load_file(str(unet / index["weight_map"][other]))[other]
    save_file(tensors, str(unet / first))
    with pytest.raises(CheckpointError, match=r"index.json: 1 keys are in two shards .*" + other.replace(".", r"\.")):
        open_state_dict(str(bad))
    bad.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match=r"index.json: not a shard index"):
        open_state_dict(str(bad))

