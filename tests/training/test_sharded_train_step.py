"""The train step on a tiny inflated UNet: sharded runs (2x4, 1x8) equal the single-device run;
shardings follow the rules; frozen leaves untouched; accumulation = big batch; loss goes down."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animatediff_jax.params import flatten
from animatediff_jax import sharding as shd
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training import trainer
from animatediff_jax.training.config import load_config
from animatediff_jax.training.optimizer import make_optimizer
from animatediff_jax.training.step import create_train_state, make_loss_and_grads, make_train_step
from animatediff_jax.training.trainable import split
from tests.training import tiny
from tests.utils import rel_err

BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tiny.write_tokenizer(tmp_path_factory.mktemp("tok"))
    # A non-zero proj_out so that every motion parameter gets a gradient in the first step.
    cfg = load_config(None, tiny.overrides(tok, motion_module_kwargs={
        "num_attention_heads": 2, "norm_num_groups": 8, "max_seq_length": 8, "zero_init_proj_out": False}))
    unet, vae, text, motion, text_cfg, vae_cfg, params = trainer.build_models(cfg)
    trainable, frozen_unet = split(params["unet"], cfg.trainable_modules)
    frozen = {"unet": frozen_unet, "vae": params["vae"], "text_encoder": params["text_encoder"]}
    tokenizer = trainer.load_tokenizer(cfg, text_cfg.max_position_embeddings)
    batch = trainer.HostInput(cfg, trainer.open_source(cfg), tokenizer, (0, BATCH), BATCH)(0)
    apply = trainer.apply_functions(unet, vae, text, vae_cfg)
    abar = NoiseSchedule.preset("B").alphas_cumprod
    null_ids = jnp.asarray(tokenizer([""])[0])
    return dict(cfg=cfg, trainable=trainable, frozen=frozen, batch=batch, apply=apply, abar=abar,
                null_ids=null_ids)


def _step(setup, micro=1, micro_sharding=None):
    lg = make_loss_and_grads(setup["apply"], setup["abar"], setup["null_ids"], 0.5, "epsilon", micro,
                             micro_sharding)
    opt = make_optimizer(learning_rate=1e-3)
    return lg, opt, make_train_step(lg, opt, return_grads=True)


@pytest.fixture(scope="module")
def single(setup):
    """The single-device step (jitted once for this module), the initial state and one step's output."""
    _, opt, step = _step(setup)
    step = jax.jit(step)
    state = create_train_state(setup["trainable"], opt, 0)
    new, metrics = step(state, setup["frozen"], setup["batch"])
    return step, state, new, metrics


def _flat(tree):
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("data,fsdp", [(2, 4), (1, 8)])
def test_sharded_step_equals_single_device(setup, single, data, fsdp):
    mesh = shd.make_mesh(data, fsdp)
    _, opt, step = _step(setup)
    state0 = create_train_state(setup["trainable"], opt, 0)
    state_sh = shd.tree_shardings(state0, mesh)
    frozen_sh = shd.tree_shardings(setup["frozen"], mesh)
    batch_sh, rep = shd.batch_sharding(mesh), shd.replicated(mesh)
    state = trainer.place(state0, state_sh)
    frozen = trainer.place(setup["frozen"], frozen_sh)
    batch = shd.global_batch(setup["batch"], batch_sh, BATCH)
    metrics_sh = {"loss": rep, "grad_norm": rep, "finite": rep, "grads": state_sh.params}
    new, metrics = jax.jit(step, in_shardings=(state_sh, frozen_sh, batch_sh),
                           out_shardings=(state_sh, metrics_sh), donate_argnums=0)(state, frozen, batch)
    _, _, ref_new, ref_metrics = single
    assert rel_err(metrics["loss"], ref_metrics["loss"]) < 1e-5
    assert rel_err(_flat(metrics["grads"]), _flat(ref_metrics["grads"])) < 1e-5
    # Adam's first update is ~lr * g / (|g| + eps): entries with |g| near eps amplify grad rounding,
    # so the updated params (not the tiny updates alone) are compared.
    assert rel_err(_flat(new.params), _flat(ref_new.params)) < 1e-5

    # Parameters, optimizer moments and frozen params sit where the rules put them; FSDP really shards.
    sharded = 0
    for path, leaf in flatten(new.params).items():
        expected = shd.partition_spec("/".join(path), leaf.shape, mesh)
        assert leaf.sharding.spec == expected, (path, leaf.sharding.spec, expected)
        sharded += "fsdp" in expected
    assert sharded > 0
    mu = new.opt_state[1][0].mu
    assert jax.tree.map(lambda a: a.sharding.spec, mu) == jax.tree.map(lambda a: a.sharding.spec, new.params)
    assert all(leaf.sharding.spec == shd.partition_spec("/".join(p), leaf.shape, mesh)
               for p, leaf in flatten(frozen).items())


def test_accumulated_gradients_equal_big_batch(setup, single):
    _, opt, step = _step(setup, micro=2)
    _, state, ref_new, ref_metrics = single
    new, metrics = jax.jit(step)(state, setup["frozen"], setup["batch"])
    assert rel_err(metrics["loss"], ref_metrics["loss"]) < 1e-5
    assert rel_err(_flat(metrics["grads"]), _flat(ref_metrics["grads"])) < 1e-5
    assert rel_err(_flat(new.params), _flat(ref_new.params)) < 1e-5


def test_only_motion_trains_frozen_untouched_loss_decreases(setup, single):
    step, state, _, _ = single
    frozen_before = jax.tree.map(np.array, setup["frozen"])
    fixed = jax.random.PRNGKey(7)   # the loss at a fixed draw of t, noise and caption drops
    eval_loss = lambda s: float(step(s.replace(rng=fixed), setup["frozen"], setup["batch"])[1]["loss"])
    first = eval_loss(state)
    for _ in range(8):
        state, metrics = step(state, setup["frozen"], setup["batch"])
        assert bool(metrics["finite"])
    assert eval_loss(state) < 0.9 * first
    assert int(state.step) == 8
    # Optimizer state exists for exactly the trainable (motion) leaves, and each of them moved.
    assert jax.tree.structure(state.opt_state[1][0].mu) == jax.tree.structure(setup["trainable"])
    for (path, a), b in zip(flatten(setup["trainable"]).items(), jax.tree.leaves(state.params)):
        assert "motion_modules" in "/".join(path) and not np.array_equal(np.asarray(a), np.asarray(b)), path
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(setup["frozen"])):
        assert np.array_equal(a, np.asarray(b))


def test_non_finite_loss_leaves_state_untouched(setup, single):
    step, state, _, _ = single
    frozen = dict(setup["frozen"], vae=jax.tree.map(lambda x: np.full_like(x, np.nan), setup["frozen"]["vae"]))
    new, metrics = step(state, frozen, setup["batch"])
    assert not bool(metrics["finite"]) and int(new.step) == 0
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
