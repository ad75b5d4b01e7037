"""Flax params <-> .safetensors: bit-exact round trip, dtype on request, config metadata, sharded load,
readable by the safetensors library, and never a half-written file."""
import os

import jax
import ml_dtypes
import numpy as np
import pytest
from animatediff_jax.params import flatten
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from safetensors.numpy import load_file

from animatediff_jax import checkpoint
from animatediff_jax.models.configs import UNetConfig


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv_in": {"kernel": rng.standard_normal((3, 3, 4, 8), dtype=np.float32),
                        "bias": rng.standard_normal(8, dtype=np.float32)},
            "down_blocks_0": {"resnets_0": {"norm1": {"scale": rng.standard_normal(8, dtype=np.float32)}}},
            "table": {"embedding": rng.standard_normal((16, 8), dtype=np.float32)},
            "steps": np.arange(5, dtype=np.int32)}


def test_round_trip_is_bit_identical_with_config(tmp_path):
    params, path = _params(), str(tmp_path / "p.safetensors")
    config = UNetConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    assert not config.mismatches()
    checkpoint.save_params(path, jax.tree.map(jax.numpy.asarray, params), config=config, source="test")
    loaded, meta = checkpoint.load_params(path)
    a, b = flatten(params), flatten(loaded)
    assert a.keys() == b.keys()
    for k in a:
        assert b[k].dtype == a[k].dtype and np.array_equal(a[k], b[k]), k
    assert isinstance(b[("conv_in", "kernel")], np.memmap)  # zero-copy view of the file
    assert checkpoint.load_config(meta) == config and meta["source"] == "test"
    # Any safetensors reader sees '/'-joined Flax paths.
    plain = load_file(path)
    assert np.array_equal(plain["down_blocks_0/resnets_0/norm1/scale"], params["down_blocks_0"]["resnets_0"]["norm1"]["scale"])


def test_bfloat16_on_request(tmp_path):
    params, path = _params(), str(tmp_path / "p.safetensors")
    checkpoint.save_params(path, params, dtype="bfloat16")
    loaded, meta = checkpoint.load_params(path)
    assert meta["dtype"] == "bfloat16"
    k = loaded["conv_in"]["kernel"]
    assert k.dtype == ml_dtypes.bfloat16 and loaded["steps"].dtype == np.int32  # integers untouched
    np.testing.assert_array_equal(k, params["conv_in"]["kernel"].astype(ml_dtypes.bfloat16))
    up, _ = checkpoint.load_params(path, dtype="float32")
    assert up["conv_in"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(up["conv_in"]["kernel"], k.astype(np.float32))
    # float32 store, bfloat16 load
    checkpoint.save_params(path, params)
    down, _ = checkpoint.load_params(path, dtype="bfloat16")
    assert down["table"]["embedding"].dtype == ml_dtypes.bfloat16


def test_load_into_target_sharding(tmp_path):
    params, path = _params(), str(tmp_path / "p.safetensors")
    checkpoint.save_params(path, params)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "fsdp"))

    def rule(path, shape):  # shard the last axis over fsdp where it divides
        return NamedSharding(mesh, P(*([None] * (len(shape) - 1) + ["fsdp"])) if shape and shape[-1] % 4 == 0 else P())

    loaded, _ = checkpoint.load_params(path, sharding=rule)
    k = loaded["conv_in"]["kernel"]
    assert isinstance(k, jax.Array) and k.sharding.spec == P(None, None, None, "fsdp")
    np.testing.assert_array_equal(np.asarray(k), params["conv_in"]["kernel"])
    one = NamedSharding(mesh, P())
    loaded, _ = checkpoint.load_params(path, sharding=one)
    assert loaded["steps"].sharding == one


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = str(tmp_path / "p.safetensors")
    checkpoint.save_params(path, _params(0))
    before = open(path, "rb").read()
    specs = {"a": ((2,), np.float32), "b": ((3,), np.float32)}

    def tensors():
        yield "a", np.zeros(2, np.float32)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        checkpoint.write_safetensors(path, specs, tensors())
    assert open(path, "rb").read() == before
    with pytest.raises(ValueError, match="never written"):
        checkpoint.write_safetensors(str(tmp_path / "new.safetensors"), specs, iter([("a", np.zeros(2, np.float32))]))
    with pytest.raises(ValueError, match="header says"):
        checkpoint.write_safetensors(str(tmp_path / "new.safetensors"), specs, iter([("a", np.zeros(3, np.float32))]))
    assert sorted(os.listdir(tmp_path)) == ["p.safetensors"]
