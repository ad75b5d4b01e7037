"""LoRA / MotionLoRA training: only the factors get gradients and optimizer state, step 0 is the base
model, the frozen UNet (motion module included) is bit-identical after donated jitted steps, the loss
falls; a MotionLoRA run checkpoints only the factors and its export, fused back by convert/, equals
W + (alpha/r) up @ down in NumPy; the spatial (kohya) export reads back the same way."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from animatediff_jax.params import flatten
from animatediff_jax.errors import UsageError
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.training import lora, trainer
from animatediff_jax.training.config import load_config
from animatediff_jax.training.optimizer import make_optimizer
from animatediff_jax.training.step import create_train_state, make_loss_and_grads, make_train_step
from convert.export import export_original
from convert.lora import apply_lora_files, fuse_motion_loras, read_factors
from convert.motion import load_motion_module
from tests.training import tiny
from tests.utils import rel_err

RANK, ALPHA, BATCH = 2, 4.0, 8
MOTION = {"num_attention_heads": 2, "norm_num_groups": 8, "max_seq_length": 8, "zero_init_proj_out": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tiny.write_tokenizer(tmp_path_factory.mktemp("tok"))
    # A trained-looking motion module: non-zero proj_out, so its attention affects the output.
    cfg = load_config(None, tiny.overrides(tok, motion_module_kwargs=MOTION))
    unet, vae, text, motion, text_cfg, vae_cfg, params = trainer.build_models(cfg)
    tokenizer = trainer.load_tokenizer(cfg, text_cfg.max_position_embeddings)
    return dict(tok=tok, motion=motion, frozen=params,
                batch=trainer.HostInput(cfg, trainer.open_source(cfg), tokenizer, (0, BATCH), BATCH)(0),
                apply=trainer.apply_functions(unet, vae, text, vae_cfg),
                null_ids=jax.numpy.asarray(tokenizer([""])[0]))


def _loss_and_grads(setup, combine=None):
    abar = NoiseSchedule.preset("B").alphas_cumprod
    kw = {} if combine is None else {"combine": combine}
    return make_loss_and_grads(setup["apply"], abar, setup["null_ids"], 0.5, **kw)


def _kernel(path):
    return "/".join(path).endswith("kernel") and "/attn" in "/".join(path) and "/to_" in "/".join(path)


def test_motion_lora_trains_only_factors_and_leaves_the_unet_bit_identical(setup):
    unet = setup["frozen"]["unet"]
    factors = {"lora": lora.init_factors(unet, "motion", RANK, seed=0)}
    expected = {".".join(p) for p in flatten(unet) if _kernel(p) and "motion_modules_" in "/".join(p)}
    assert set(factors["lora"]) == expected and len(expected) == 7 * 8   # 7 modules x 2 attn x q,k,v,out

    fuse = lambda t, f: lora.fuse(f, t["lora"], ALPHA / RANK)  # noqa: E731  (what train.py uses)
    lg = _loss_and_grads(setup, fuse)
    opt = make_optimizer(learning_rate=1e-2)
    step = jax.jit(make_train_step(lg, opt, return_grads=True), donate_argnums=0)
    frozen_before = jax.tree.map(np.array, setup["frozen"])
    frozen = jax.device_put(setup["frozen"])
    state = create_train_state(factors, opt, 0)

    # Step 0 is the base model: the same loss as the UNet without LoRA at the same draw.
    fixed = jax.random.PRNGKey(7)
    base_loss, _ = jax.jit(_loss_and_grads(setup))({}, frozen, setup["batch"], fixed)
    loss0, _ = jax.jit(lg)(state.params, frozen, setup["batch"], fixed)
    assert rel_err(loss0, base_loss) < 1e-6

    # Gradients and optimizer state exist for the factors only; at step 0 (up = 0) only `up` moves.
    state, metrics = step(state, frozen, setup["batch"])
    assert jax.tree.structure(metrics["grads"]) == jax.tree.structure(factors)
    assert jax.tree.structure(state.opt_state[1][0].mu) == jax.tree.structure(factors)
    for name, g in metrics["grads"]["lora"].items():
        assert np.abs(np.asarray(g["up"])).max() > 0, name
        assert np.abs(np.asarray(g["down"])).max() == 0, name

    eval_loss = lambda s: float(jax.jit(lg)(s.params, frozen, setup["batch"], fixed)[0])  # noqa: E731
    for _ in range(7):
        state, metrics = step(state, frozen, setup["batch"])
        assert bool(metrics["finite"])
    assert eval_loss(state) < 0.95 * float(loss0)
    for (path, a), b in zip(flatten(frozen_before).items(), jax.tree.leaves(jax.device_get(frozen))):
        np.testing.assert_array_equal(a, np.asarray(b), err_msg="/".join(path))


def test_motion_lora_run_checkpoints_factors_and_exports_the_original_format(setup, tmp_path):
    module = trainer.motion_subtree(setup["frozen"]["unet"])
    mm = str(tmp_path / "mm_v2.ckpt")
    export_original(module, setup["motion"], mm)
    workdir = tmp_path / "run"
    cfg = load_config(None, tiny.overrides(
        setup["tok"], motion_module_kwargs=MOTION, motion_module_path=mm, learning_rate=1e-2,
        lora={"rank": RANK, "alpha": ALPHA, "targets": "motion"}))
    result = trainer.train(cfg, str(workdir))
    factors = result["params"]["lora"]
    assert result["step"] == 3 and set(result["params"]) == {"lora"}
    assert all(np.abs(f["up"]).max() > 0 for f in factors.values())

    # The checkpoint's state holds the factors (and their Adam moments), no UNet weight.
    saved = ocp.StandardCheckpointer().metadata(str(workdir / "checkpoints" / "3" / "state"))
    tree = saved.item_metadata.tree if hasattr(saved, "item_metadata") else saved
    names = {"/".join(str(getattr(k, "key", k)) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    assert any(n.startswith("params/lora/") for n in names)
    assert all("/lora/" in n or n in ("step", "rng") or n.endswith("/count") for n in names), sorted(names)

    # The export is an original MotionLoRA; convert/ fuses it into the module as W + (alpha/r) up @ down.
    path = str(workdir / "motion_lora.ckpt")
    keys = torch.load(path, weights_only=True).keys()
    assert len(keys) == 2 * len(factors) and all(".processor.to_" in k and "_lora." in k for k in keys)
    base = load_motion_module(mm).params
    fused, base = flatten(fuse_motion_loras(base, [(path, 1.0)])), flatten(base)
    for p, w in base.items():
        name = ".".join(p)
        if name in factors:
            up, down = np.asarray(factors[name]["up"], np.float64), np.asarray(factors[name]["down"], np.float64)
            want = np.asarray(w, np.float64) + (ALPHA / RANK) * (up @ down).T   # (out, in) -> Flax (in, out)
            assert rel_err(fused[p], want) < 1e-6, name
        else:
            np.testing.assert_array_equal(fused[p], w, err_msg=name)
    assert sum(".".join(p) in factors for p in base) == len(factors)
    # The raw factors (for `convert export-motion-lora`) read back with their alpha.
    raw = read_factors(str(workdir / "lora_factors.safetensors"))
    assert {".".join(p) for p in raw} == set(factors)
    for p, w in raw.items():
        assert w.alpha == ALPHA and np.array_equal(w.up, factors[".".join(p)]["up"])


def test_spatial_lora_export_reads_back_as_kohya(setup, tmp_path):
    unet = setup["frozen"]["unet"]
    factors = lora.init_factors(unet, "unet", RANK, seed=1)
    assert factors and all("motion_modules_" not in n and "/attn" not in n for n in factors)
    rng = np.random.default_rng(0)
    for f in factors.values():
        f["up"] = rng.standard_normal(f["up"].shape).astype(np.float32)
    cfg = load_config(None, tiny.overrides(setup["tok"], lora={"rank": RANK, "alpha": ALPHA, "targets": "unet"}))
    path, factors_path = trainer.export_lora(cfg, str(tmp_path), factors, step=1)
    assert (os.path.basename(path), os.path.basename(factors_path)) == ("lora.safetensors", "lora_factors.safetensors")
    fused = flatten(apply_lora_files({"unet": unet}, [(path, 1.0)])["unet"])
    ours = flatten(lora.fuse(unet, factors, ALPHA / RANK))   # the fusion training differentiates
    for p, w in flatten(unet).items():
        name = ".".join(p)
        if name in factors:
            f = factors[name]
            want = np.asarray(w, np.float64) + (ALPHA / RANK) * (np.float64(f["up"]) @ np.float64(f["down"])).T
            assert rel_err(fused[p], want) < 1e-6 and rel_err(ours[p], want) < 1e-6, name
        else:
            np.testing.assert_array_equal(fused[p], w)


def test_lora_config_errors(setup, tmp_path):
    cfg = lambda **kw: load_config(None, tiny.overrides(setup["tok"], **kw))  # noqa: E731
    with pytest.raises(UsageError, match="^lora.targets: .*set motion_module_path"):
        cfg(lora={"rank": 2})
    with pytest.raises(UsageError, match="^lora.file: .*written as .safetensors"):
        cfg(lora={"rank": 2, "targets": "unet", "file": "x.ckpt"})
    with pytest.raises(ValueError, match="lora targets must be one of"):
        lora.init_factors(setup["frozen"]["unet"], "text", 2, 0)
    with pytest.raises(ValueError, match=r"^lora\.ranks: unknown config key \(did you mean lora\.rank\?\)"):
        cfg(lora={"ranks": 2})
