"""Mesh, batch, partition-rule, trainable-split and optimizer checks (no network needed)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.sharding import PartitionSpec as P

from animatediff_jax import sharding as shd
from animatediff_jax.training.optimizer import learning_rate_schedule, make_optimizer
from animatediff_jax.training.trainable import merge, split
from tests.utils import rel_err


def test_mesh_sizes_and_errors():
    assert shd.mesh_shape(-1, 4, 1, 8) == (2, 4, 1)
    assert shd.mesh_shape(1, -1, 1, 8) == (1, 8, 1)
    assert dict(shd.make_mesh(2, 4).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        shd.mesh_shape(-1, 3, 1, 8)
    with pytest.raises(ValueError, match="needs 6 devices, but there are 8"):
        shd.mesh_shape(2, 3, 1, 8)
    mesh = shd.make_mesh(2, 4)
    shd.check_batch(16, mesh, 2)
    with pytest.raises(ValueError, match="train_batch_size 12 does not divide .* 8 batch shards"):
        shd.check_batch(12, mesh)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2 does not divide"):
        shd.check_batch(8, mesh, 2)


def test_partition_rules_and_host_rows():
    mesh = shd.make_mesh(1, 4, 2)
    kernel = "down_blocks_0/motion_modules_0/transformer_blocks_0/attn1/to_q/kernel"
    assert shd.partition_spec(kernel, (320, 320), mesh) == P("fsdp", "tensor")      # rule + FSDP
    assert shd.partition_spec("conv_in/kernel", (3, 3, 4, 320), mesh) == P(None, None, None, "fsdp")
    assert shd.partition_spec("conv_in/bias", (320,), mesh) == P(None)               # too small
    assert shd.partition_spec("x/kernel", (330, 90), mesh) == P(None, None)           # nothing divides
    assert shd.partition_spec("x/kernel", (64, 4096), mesh, [("x/", ("tensor", None))]) == P("tensor", "fsdp")
    tree = {"mu": {"a": {"kernel": jnp.zeros((64, 128))}}, "count": jnp.zeros((), jnp.int32)}
    specs = jax.tree.map(lambda s: s.spec, shd.tree_shardings(tree, mesh))
    assert specs == {"mu": {"a": {"kernel": P(None, "fsdp")}}, "count": P()}
    assert shd.host_rows(shd.batch_sharding(shd.make_mesh(2, 4)), 16) == (0, 16)   # one process: all rows


def test_split_merge_roundtrip():
    params = {"down_blocks_0": {"resnets_0": {"conv1": {"kernel": np.ones(3)}},
                                "motion_modules_0": {"proj_in": {"kernel": np.zeros(2)}}},
              "conv_in": {"bias": np.ones(1)}}
    trainable, frozen = split(params, ["motion_modules."])
    assert list(trainable["down_blocks_0"]) == ["motion_modules_0"]
    assert "motion_modules_0" not in frozen["down_blocks_0"]
    assert jax.tree.structure(merge(trainable, frozen)) == jax.tree.structure(params)
    everything, none = split(params, ["."])                      # image fine-tuning
    assert none == {} and jax.tree.structure(everything) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="match no parameter"):
        split(params, ["lora_"])


def test_optimizer_matches_torch_adamw_with_clipping():
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(2, 5, 3)).astype(np.float32), rng.normal(size=(3, 5, 3)).astype(np.float32) * 4
    opt = make_optimizer(learning_rate=1e-2, max_grad_norm=1.0)
    params, state = jnp.asarray(w0[0]), None
    state = opt.init(params)
    w = torch.tensor(w0[0], requires_grad=True)
    topt = torch.optim.AdamW([w], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        w.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([w], 1.0)
        topt.step()
    assert rel_err(params, w.detach().numpy()) < 1e-5


def test_schedules_warmup_cosine():
    s = learning_rate_schedule(1.0, "cosine", lr_warmup_steps=10, max_train_steps=110)
    assert float(s(0)) == 0.0 and abs(float(s(5)) - 0.5) < 1e-6 and abs(float(s(10)) - 1.0) < 1e-6
    assert abs(float(s(60)) - 0.5) < 1e-6 and float(s(110)) < 1e-6
    with pytest.raises(ValueError, match="lr_scheduler"):
        learning_rate_schedule(1.0, "step")
