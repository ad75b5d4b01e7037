"""The shared pytree helpers (`animatediff_jax.params`) and the network-init helpers (`models/init.py`)."""
import os

import numpy as np
import pytest

from animatediff_jax.errors import InputError
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import CLIPTextConfig
from animatediff_jax.models.init import check_params, example_inputs, param_shapes, random_params
from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import (ParamsMismatchError, cache_root, flatten, insert_motion, is_motion_path,
                                    unflatten)
from animatediff_jax.sampling.pipeline import enable_compilation_cache
from animatediff_jax.param_shapes import shape_cache_dir


def _unet(motion_shape=(2, 2)):
    return {"conv_in": {"kernel": np.zeros((3, 3))},
            "down_blocks_0": {"resnets_0": {"conv1": {"kernel": np.zeros((3, 3))}},
                              "motion_modules_0": {"proj_in": {"kernel": np.zeros(motion_shape)}}}}


def test_flatten_round_trip_and_motion_paths():
    tree = _unet()
    flat = flatten(tree)
    assert set(flat) == {("conv_in", "kernel"), ("down_blocks_0", "resnets_0", "conv1", "kernel"),
                         ("down_blocks_0", "motion_modules_0", "proj_in", "kernel")}
    assert flatten(unflatten(flat)).keys() == flat.keys()
    assert [p for p in flat if is_motion_path(p)] == [("down_blocks_0", "motion_modules_0", "proj_in", "kernel")]


def test_insert_motion_strict_replaces_exactly_the_motion_leaves():
    motion = {"down_blocks_0": {"motion_modules_0": {"proj_in": {"kernel": np.ones((2, 2))}}}}
    out = insert_motion(_unet(), motion)
    assert np.all(out["down_blocks_0"]["motion_modules_0"]["proj_in"]["kernel"] == 1)
    assert np.all(out["conv_in"]["kernel"] == 0)
    with pytest.raises(ParamsMismatchError, match="has shape"):
        insert_motion(_unet(motion_shape=(3, 2)), motion)
    extra = {"up_blocks_0": {"motion_modules_0": {"proj_in": {"kernel": np.ones((2, 2))}}}, **motion}
    with pytest.raises(ParamsMismatchError, match="1 params the UNet lacks"):
        insert_motion(_unet(), extra)
    with pytest.raises(ValueError, match="1 UNet motion params absent"):  # still a ValueError
        insert_motion(_unet(), {})


def test_insert_motion_loose_adds_motion_to_a_2d_unet():
    unet2d = {"conv_in": {"kernel": np.zeros((3, 3))}, "down_blocks_0": {"resnets_0": {"k": np.zeros(1)}}}
    motion = {"down_blocks_0": {"motion_modules_0": {"proj_in": {"kernel": np.ones((2, 2))}}}}
    out = insert_motion(unet2d, motion, strict=False)
    assert set(flatten(out)) == set(flatten(unet2d)) | set(flatten(motion))
    assert set(out["down_blocks_0"]) == {"resnets_0", "motion_modules_0"}


def test_one_cache_root_for_every_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ANIMATEDIFF_JAX_CACHE", raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == str(tmp_path / "xdg" / "animatediff_jax")
    assert shape_cache_dir() == os.path.join(cache_root(), "param_shapes")
    monkeypatch.setattr("jax.config.update", lambda *a: None)  # the path only; leave JAX's config alone
    assert enable_compilation_cache() == os.path.join(cache_root(), "jax_cache")
    monkeypatch.setenv("ANIMATEDIFF_JAX_CACHE", str(tmp_path / "mine"))
    assert cache_root() == str(tmp_path / "mine")
    monkeypatch.delenv("ANIMATEDIFF_JAX_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == os.path.expanduser("~/.cache/animatediff_jax")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(str(target)) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_check_params_names_missing_extra_and_misshaped():
    net = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=100, max_position_embeddings=8))
    params = random_params(net, 0, *example_inputs(net))
    assert {p: np.shape(v) for p, v in flatten(params).items()} == param_shapes(net)
    check_params(net, params, "text encoder (t.safetensors)")
    flat = flatten(params)
    first = sorted(flat)[0]
    flat[("extra", "kernel")] = np.zeros(1)
    flat[first] = np.zeros((1,) + np.shape(flat[first]))
    with pytest.raises(InputError, match=r"t.safetensors\): parameters do not fit the network: "
                                         r"1 unexpected \(extra/kernel\) 1 mis-shaped"):
        check_params(net, unflatten(flat), "text encoder (t.safetensors)")
