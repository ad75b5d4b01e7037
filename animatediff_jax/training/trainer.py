"""The training run: motion modules (or the image UNet, or LoRA / MotionLoRA factors) against a
frozen SD1.x base, from a checked `TrainingConfig` (training/config.py).

    result = train(load_config("configs/training/training.yaml", ["max_train_steps=10"]), "runs/mm")

One file, read top to bottom: mesh, input, model + optimizer, sharding, update step, checkpoint,
training loop (logging / validation), export. The same code runs on one CPU, on eight devices, and
on many hosts (`distributed.*`). The command line (`python -m animatediff_jax.train`) is train.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from animatediff_jax import sharding as shd
from animatediff_jax.checkpoint import save_params
from animatediff_jax.data.train_input import TrainInput, source_from_config
from animatediff_jax.errors import InputError, UsageError, UserError
from animatediff_jax.outputs import atomic_path
from animatediff_jax.models.attention import warn_unavailable
from animatediff_jax.models.clip_text import CLIPTextModel
from animatediff_jax.models.configs import SHAPE_FIELDS, CLIPTextConfig, UNetConfig, VAEConfig
from animatediff_jax.param_shapes import module_param_shapes
from animatediff_jax.models.unet3d import UNet3DConditionModel
from animatediff_jax.models.vae import AutoencoderKL, sample_latent
from animatediff_jax.sampling.pipeline import SamplingStopped
from animatediff_jax.schedules import NoiseSchedule
from animatediff_jax.tokenizer import PromptTokenizer
from animatediff_jax.training import checkpointing as ckpt
from animatediff_jax.training import lora, remote_workdir, workdir_lock
from animatediff_jax.training.config import (LR_SCHEDULE_KEYS, MOTION_ARCHITECTURE, TrainingConfig, check_sample_size,
                                             config_changes, layout_changes, validation_warning, warmup_warning)
from animatediff_jax.training.metrics import MetricsLogger, compiled_flops
from animatediff_jax.training.optimizer import learning_rate_schedule, make_optimizer
from animatediff_jax.training.step_memory import (check_step_memory, out_of_memory, step_memory_advice,
                                                  validation_memory_advice)
from animatediff_jax.training.step import (ApplyFunctions, TrainState, create_train_state, make_loss_and_grads,
                                           make_train_step)
from animatediff_jax.loading import VariantError, is_flax_file, load_motion, read_base, read_motion_module
from animatediff_jax.params import cache_root, check_shapes, flatten, insert_motion, is_motion_path, unflatten
from animatediff_jax.training.trainable import count, merge, split
from animatediff_jax.training.validation import Validator, samples_folder, samples_missing
from animatediff_jax.xla_options import jit
from convert.export import export_adapter, export_original, pickle_loses


ORIGINAL_EXPORT, ADAPTER_EXPORT = "motion_module.ckpt", "motion_adapter"  # export_formats original, diffusers
EXPORTS = {"original": ORIGINAL_EXPORT, "diffusers": ADAPTER_EXPORT}
UNET_EXPORT, FACTORS_EXPORT = "unet_trainable.safetensors", "lora_factors.safetensors"
EXPORT_RECORD = "exports.json"  # {"step": the checkpoint step the exports hold, "files": their names}, written last


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss or the gradients became NaN/Inf; the state before that step is saved."""


# ===================================== mesh =====================================================
def setup_mesh(cfg: TrainingConfig) -> jax.sharding.Mesh:
    """Join the other hosts (when configured), then the ('data', 'fsdp', 'tensor') mesh."""
    d = cfg.distributed
    if not jax.distributed.is_initialized():
        shd.initialize_distributed(d.coordinator_address, d.num_processes, d.process_id,
                                   auto=d.initialize in (True, "auto"))
    m = cfg.mesh
    return shd.make_mesh(m.data, m.fsdp, m.tensor)


# ===================================== input ====================================================
def load_tokenizer(cfg: TrainingConfig, length: int) -> PromptTokenizer:
    """PromptTokenizer from `tokenizer_path` or the base model folder's `tokenizer/`."""
    return PromptTokenizer.from_pretrained(cfg.tokenizer_path or cfg.pretrained_model_path, max_length=length)


def dataset_name(cfg: TrainingConfig) -> str:
    """How warnings name the examples `train_data` gives: its dataset folder, or the procedural world."""
    d = cfg.train_data
    return f"dataset_dir {d.dataset_dir}" if d.source == "tfds" else f"source procedural, num_clips {d.num_clips}"


def open_source(cfg: TrainingConfig):
    """The random-access example source `train_data` names (data/train_input.py): the procedural
    world, or a built TFDS dataset directory of video clips or pre-computed latents. UsageError naming
    train_data.dataset_dir when its first example is not the clip train_data asks for (sample_n_frames
    frames of sample_size² pixels; pre-computed latents: `precomputed_latents.check_fits`, which also
    checks them against the base's VAE before it loads)."""
    d = cfg.train_data
    source = source_from_config(dataclasses.asdict(d))
    example = source[0]
    if "video" not in example:  # pre-computed latents: frames, size, VAE and scaling factor the run's
        from animatediff_jax.data.precomputed_latents import check_fits  # noqa: PLC0415 - imports tensorflow_datasets
        check_fits(d.dataset_dir, example, frames=d.sample_n_frames, size=d.sample_size, base=cfg.pretrained_model_path,
                   vae_config=cfg.vae_config or VAEConfig(), text_config=cfg.text_encoder_config or CLIPTextConfig())
        return source
    clip = example["video"].shape[:3]
    want = (d.sample_n_frames, d.sample_size, d.sample_size)[:len(clip)]
    if tuple(clip) != want:
        raise UsageError(f"train_data.dataset_dir {d.dataset_dir}: its clips are {tuple(clip)} (frames"
                         f"{', height, width' if len(clip) == 3 else ''}); train_data.sample_n_frames"
                         f"{' / sample_size' if len(clip) == 3 else ''} ask for {want}")
    return source


class HostInput:
    """step -> this host's rows of that step's global batch (numpy); the position is the step.

    The data are split by batch shard (data x fsdp), not by process: each shard's rows come from its
    own `TrainInput` shard, so any number of hosts together read exactly what one host would with the
    same mesh, and a resumed run continues where it stopped."""

    def __init__(self, cfg: TrainingConfig, source, tokenizer, rows: tuple[int, int], shard_rows: int):
        self.shards = [TrainInput(source, tokenizer, cfg.train_batch_size, (s, s + shard_rows),
                                  seed=cfg.train_data.seed) for s in range(rows[0], rows[1], shard_rows)]

    def __call__(self, step: int) -> dict:
        parts = [shard(step) for shard in self.shards]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


# ===================================== model + optimizer ========================================
def build_models(cfg: TrainingConfig, decoder: bool = False):
    """(unet, vae, text encoder modules, motion config, text config, vae config, initial params
    {'unet','vae','text_encoder'}). The VAE params hold the encoder only, unless `decoder`
    (validation sampling decodes)."""
    dtype = jnp.bfloat16 if cfg.mixed_precision_training else jnp.float32
    motion = cfg.motion_config
    base = None
    if cfg.pretrained_model_path:
        with one_variant("pretrained_model_path"):
            base = read_base(cfg.pretrained_model_path, dtype="float32", progress=jax.process_index() == 0)
        unet_cfg, vae_cfg, text_cfg = base.unet_config, base.vae_config, base.text_config
    else:
        unet_cfg = cfg.unet_config or UNetConfig()
        vae_cfg = cfg.vae_config or VAEConfig()
        text_cfg = cfg.text_encoder_config or CLIPTextConfig()
    warn_unavailable(cfg.attention_impl, jax.default_backend(), dtype)  # a cached step is not traced again
    unet = UNet3DConditionModel(unet_cfg, motion, dtype=dtype, param_dtype=jnp.float32,
                                attention_impl=cfg.attention_impl, remat=cfg.gradient_checkpointing)
    vae = AutoencoderKL(vae_cfg, dtype=dtype)
    text = CLIPTextModel(text_cfg, dtype=dtype)
    d = cfg.train_data
    check_sample_size(d.sample_size, vae_cfg)
    frames, size = (1 if cfg.image_finetune else d.sample_n_frames), d.sample_size
    latent = size // 2 ** (len(vae_cfg.block_out_channels) - 1)
    # rbg keys: random init compiles several times faster than with threefry (values differ, fine).
    r = jax.random.split(jax.random.key(cfg.global_seed, impl="unsafe_rbg"), 3)
    unet_inputs = (jnp.zeros((1, frames, latent, latent, unet_cfg.in_channels)), jnp.zeros((1,), jnp.int32),
                   jnp.zeros((1, 1, unet_cfg.cross_attention_dim)))
    if base is None:
        params = {"unet": jit(unet.init)(r[0], *unet_inputs)["params"]}
        # Training only encodes: the decoder's params are built only for validation sampling.
        params["vae"] = jit(partial(vae.init, method=AutoencoderKL.encode))(
            r[1], jnp.zeros((1, size, size, 3)))["params"]
        if decoder:
            params["vae"] = {**params["vae"], **jit(partial(vae.init, method=AutoencoderKL.decode))(
                r[1], jnp.zeros((1, latent, latent, vae_cfg.latent_channels)))["params"]}
        params["text_encoder"] = jit(text.init)(r[2], jnp.zeros((1, 1), jnp.int32))["params"]
    else:
        # The base's 2D leaves with the fresh motion modules: exactly the configured network's params.
        # An init returning the motion leaves alone lets XLA drop the rest of it (SD1.5 + v2 on 2 CPU
        # cores: 15 s to compile instead of 39 s for the whole init).
        want = module_param_shapes(unet)
        fresh_motion = jit(lambda key, *x: unflatten({p: v for p, v in flatten(unet.init(key, *x)["params"]).items()
                                                      if is_motion_path(p)}))(r[0], *unet_inputs)
        params = {"unet": insert_motion(base.unet, fresh_motion, strict=False)}
        check_shapes(params["unet"], want, f"{cfg.pretrained_model_path}: its UNet with the configured motion modules")
        params["vae"] = {k: v for k, v in base.vae.items()
                         if decoder or k in ("encoder", "quant_conv")}
        params["text_encoder"] = base.text_encoder
    if cfg.motion_module_path and motion is not None:
        with one_variant("motion_module_path"):
            start = read_motion(cfg.motion_module_path)
        check_start_module(cfg, start)
        # float32, as every param the run starts from: a float16 file's weights would train in float16
        # (the master weights and AdamW's state), overflowing into NaN within steps
        params["unet"] = insert_motion(params["unet"], jax.tree.map(lambda x: np.asarray(x, np.float32), start.params))
    return unet, vae, text, motion, text_cfg, vae_cfg, params


@contextlib.contextmanager
def one_variant(key: str):
    """Reading the folder the config's `key` names: one holding weights of several variants and no
    plain weights is an InputError saying what training reads (it has no variant setting), not the
    loaders' advice to pass --variant."""
    try:
        yield
    except VariantError as e:
        raise InputError(f"{key}: {e.problem}: training reads a folder's plain weights or its only variant; "
                         "keep one variant's weight files there") from None


def check_start_module(cfg: TrainingConfig, start) -> None:
    """UsageError, one line, when the motion module `motion_module_path` holds (`start`, a
    `convert.motion.MotionModule`) is not the network the config builds: its layout (version: the mid
    block; blocks per module) or the heads, GroupNorm groups or resnet norm its file states (an
    original-format file states no heads or groups: the config's are taken). Its weights would otherwise
    run as another network, silently, or fail to fit the UNet naming no key."""
    want = cfg.motion_config
    fields = SHAPE_FIELDS["motion"] + tuple(f for f in MOTION_ARCHITECTURE if f != "input_norm")  # a sampling choice
    differ = [f for f in fields if f not in start.assumed and getattr(start.config, f) != getattr(want, f)]
    if differ:
        listed = ", ".join(f"{f} {getattr(start.config, f)!r} (the config's: {getattr(want, f)!r})" for f in differ)
        raise UsageError(f"motion_module_path {cfg.motion_module_path}: a {start.version} motion module with {listed}; "
                         f"set motion_module_version (now {cfg.motion_module_version}) and motion_module_kwargs to "
                         "the file's")


def read_motion(path: str):
    """The motion module to start from: a Flax file of this project (a miniature's, a converted one) read
    as the sampler reads it, or an original file / MotionAdapter folder converted in memory."""
    if is_flax_file(path):
        return load_motion(path, cache_root())  # a Flax file is read in place: nothing is cached
    return read_motion_module(path)


def split_trainable(cfg: TrainingConfig, unet_params: dict):
    """(trainable params, frozen UNet params, combine) where `combine(trainable, frozen)` is the UNet
    params the loss runs with: the `trainable_modules` subtree merged back, or — with `lora.rank` > 0
    — fresh LoRA factors {'lora': ...} fused into the whole (frozen) UNet."""
    rank = cfg.lora.rank
    if rank == 0:
        trainable, frozen = split(unet_params, cfg.trainable_modules)
        return trainable, frozen, merge
    factors = lora.init_factors(unet_params, cfg.lora.targets, rank, cfg.global_seed)
    scale = cfg.lora_alpha / rank
    return {"lora": factors}, unet_params, lambda trained, frozen: lora.fuse(frozen, trained["lora"], scale)


def apply_functions(unet, vae, text, vae_cfg) -> ApplyFunctions:
    """The three networks' pure apply functions (params first), as the train step calls them."""

    def unet_fn(p, z, t, ctx):
        return unet.apply({"params": p}, z, t, ctx)

    def encode_video(p, video, rng):  # (B, F, H, W, 3) uint8 -> (B, F, h, w, c) scaled latent sample
        b, f = video.shape[:2]
        x = video.reshape((b * f,) + video.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        mean, logvar = vae.apply({"params": p}, x, method=AutoencoderKL.encode)
        z = sample_latent(rng, mean, logvar) * vae_cfg.scaling_factor
        return z.reshape((b, f) + z.shape[1:])

    def encode_text(p, ids):
        return text.apply({"params": p}, ids).last_hidden_state

    def sample_latents(mean, logvar, rng):  # stored VAE moments -> the same draw encode_video makes
        b, f = mean.shape[:2]
        fold = lambda m: m.reshape((b * f,) + m.shape[2:])
        z = sample_latent(rng, fold(mean), fold(logvar)) * vae_cfg.scaling_factor
        return z.reshape(mean.shape)

    return ApplyFunctions(unet_fn, encode_video, encode_text, sample_latents)


# ===================================== sharding =================================================
def place(tree, shardings):
    """Host values (identical on every process) -> global arrays in `shardings` (multi-host safe)."""
    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
    return jax.tree.map(one, tree, shardings)


def gather(tree):
    """Global (possibly sharded across hosts) arrays -> full numpy values on every host."""
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def motion_subtree(tree: dict) -> dict:
    """Only the motion-module leaves of a UNet params tree."""
    return unflatten({p: v for p, v in flatten(tree).items() if is_motion_path(p)})


# ===================================== training =================================================
def train(cfg: TrainingConfig, workdir: str) -> dict:
    """Run (or resume) training; returns {'step', 'loss', 'params'} (trainable params, numpy), 'start'
    (the step it resumed from; loss is NaN when it trained none), 'preempted' (stopped by SIGTERM or
    Ctrl-C, also during validation sampling or at the last step: the step saved, not exported),
    'signal' (that signal's number, else None), 'exported' (the paths written at the end) and 'validated'
    (the samples folder rendered for the resumed step, below). A workdir
    whose latest checkpoint is past `max_train_steps`, or at it with its exports written from it
    (`exports_current`) and its validation samples there when due (`samples_missing`), is left as it is:
    nothing is built, trained or written ('params' None, 'start'
    and 'step' that checkpoint's step); at it with an export missing or from an earlier step (a run
    stopped at its last step; a finished run continued to a higher max_train_steps), the exports are
    written from that checkpoint, nothing trained. A run resumed at a step due for validation whose
    samples are missing (stopped or killed while rendering them, the last step's included) renders them
    from that checkpoint first.

    Raises NonFiniteLossError when a step's loss or gradients are not finite (the state before
    that step saved), UsageError when the config does not fit the devices, their memory (the compiled
    step checked before the first step; a step or validation sampling out of memory) or the data, OutputError
    when another live run holds the workdir (training/workdir_lock.py)."""
    saved = ckpt.latest_step(os.path.join(workdir, "checkpoints"))
    if saved is not None and (saved > cfg.max_train_steps or saved == cfg.max_train_steps
                              and exports_current(cfg, workdir, saved)
                              and not samples_missing(cfg, workdir, saved)):  # file reads only: no mesh, no restore
        return {"step": saved, "start": saved, "loss": float("nan"), "params": None, "preempted": False,
                "signal": None, "exported": []}
    if saved is not None:  # before the mesh and the models: a checkpoint of another layout cannot restore
        refuse_layout_change(saved_config(workdir, saved), cfg, os.path.join(workdir, "checkpoints", str(saved)))
    if cfg.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", cfg.compilation_cache_dir)
    mesh = setup_mesh(cfg)
    staging = remote_workdir.Staging(workdir)
    try:
        with workdir_lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
            return _train(cfg, workdir, mesh, staging)
    finally:
        staging.close()


def _train(cfg: TrainingConfig, workdir: str, mesh: jax.sharding.Mesh, staging: remote_workdir.Staging) -> dict:
    """`train` on `mesh`, `workdir` held by this run; files other than checkpoints written to
    `staging.local` and copied to the workdir by `staging.upload` (remote_workdir.py)."""
    main = jax.process_index() == 0
    for warning in (export_warning(cfg, workdir), validation_warning(cfg), warmup_warning(cfg)):
        if main and warning:
            print(warning, file=sys.stderr, flush=True)
    batch_size, micro = cfg.train_batch_size, cfg.gradient_accumulation_steps
    shd.check_batch(batch_size, mesh, micro)
    rules = cfg.sharding_rules
    batch_sharding = shd.batch_sharding(mesh)

    source = open_source(cfg)   # before the (slow) model build: bad data fails fast
    if main and len(source) < batch_size:
        print(f"warning: train_batch_size {batch_size} exceeds the {len(source)} examples of train_data "
              f"({dataset_name(cfg)}): every batch repeats examples", file=sys.stderr, flush=True)

    # ----- model + optimizer
    unet, vae, text, motion, text_cfg, vae_cfg, params = build_models(cfg, decoder=cfg.validating)
    trainable, frozen_unet, combine = split_trainable(cfg, params["unet"])
    encoder = {k: v for k, v in params["vae"].items() if k in ("encoder", "quant_conv")}
    frozen_dtype = jnp.bfloat16 if cfg.mixed_precision_training else jnp.float32
    frozen = jax.tree.map(lambda x: np.asarray(x).astype(frozen_dtype),
                          {"unet": frozen_unet, "vae": encoder, "text_encoder": params["text_encoder"]})
    optimizer = make_optimizer(cfg.learning_rate, cfg.adam_beta1, cfg.adam_beta2,
                               cfg.adam_weight_decay, cfg.adam_epsilon, cfg.max_grad_norm,
                               cfg.lr_scheduler, cfg.lr_warmup_steps, cfg.max_train_steps)
    if main:
        print(f"mesh {dict(mesh.shape)} over {jax.device_count()} devices, {jax.process_count()} process(es); "
              f"trainable {count(trainable):,} params, frozen {count(frozen):,}", flush=True)

    # ----- sharding
    state_host = jax.eval_shape(lambda p: create_train_state(p, optimizer, cfg.global_seed), trainable)
    state_shardings = shd.tree_shardings(state_host, mesh, rules)
    frozen_shardings = shd.tree_shardings(frozen, mesh, rules)
    state = jit(lambda p: create_train_state(p, optimizer, cfg.global_seed),
                out_shardings=state_shardings)(place(trainable, state_shardings.params))
    frozen = place(frozen, frozen_shardings)

    # ----- input
    tokenizer = load_tokenizer(cfg, text_cfg.max_position_embeddings)
    next_rows = HostInput(cfg, source, tokenizer, shd.host_rows(batch_sharding, batch_size),
                          batch_size // shd.batch_shards(mesh))
    null_ids = jnp.asarray(tokenizer([""])[0])
    validator = None
    if cfg.validating:  # host copies of the frozen weights, kept for sampling; checked before training
        validator = Validator(cfg, staging.local, (unet.config, motion, vae_cfg, text_cfg),
                              {"vae": params["vae"], "text_encoder": params["text_encoder"]}, tokenizer,
                              lambda trained: combine(trained, frozen_unet))
    del params

    # ----- update step
    schedule = NoiseSchedule.preset(cfg.noise_schedule)
    micro_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, shd.BATCH_AXES))
    loss_and_grads = make_loss_and_grads(
        apply_functions(unet, vae, text, vae_cfg), schedule.alphas_cumprod, null_ids,
        cfg.cfg_random_null_text_ratio, cfg.prediction_type, micro, micro_sharding, combine)
    step_fn = jit(make_train_step(loss_and_grads, optimizer),
                  in_shardings=(state_shardings, frozen_shardings, batch_sharding),
                  out_shardings=(state_shardings, shd.replicated(mesh)), donate_argnums=0)

    # ----- checkpoint
    manager = ckpt.make_manager(os.path.join(workdir, "checkpoints"), cfg.checkpointing_steps,
                                cfg.checkpoints_total_limit)
    restored = ckpt.restore_latest(manager, ckpt.abstract(state, state_shardings), main)
    if restored is not None:
        state, meta = restored
        if main:
            print(f"resumed from step {int(meta['step'])} ({manager.directory})", flush=True)
            changed = resume_warning(meta.get("config"), cfg, int(meta["step"]))
            if changed:
                print(changed, file=sys.stderr, flush=True)
    # ----- loop
    step = start = int(state.step)
    validated = []
    if validator is not None and restored is not None and samples_missing(cfg, workdir, start):
        validated = render_missing(validator, start, state, staging, manager)
    if start >= cfg.max_train_steps:  # finished, an export missing: nothing to train or compile
        manager.close()
        next_rows.close()
        loss, stop, signum = float("nan"), False, None
    else:
        state, step, loss, stop, signum = _loop(cfg, staging, mesh, state, frozen, step_fn, manager, next_rows,
                                                validator)

    # ----- export
    trained = gather(state.params)
    exported = []
    write = not stop and not (start >= cfg.max_train_steps and exports_current(cfg, workdir, step))  # samples only
    if write and cfg.lora.rank:
        if main:
            exported = export_lora(cfg, staging.local, trained["lora"], step)
    elif write:
        module = motion_subtree(merge(trained, gather(motion_subtree(frozen["unet"]))))
        if main:
            exported = export(cfg, staging.local, trained if motion is None else module, motion, step)
    staging.upload()  # the exports, the last TensorBoard events
    exported = [staging.remote(p) for p in exported]
    return {"step": step, "start": start, "loss": loss, "params": trained, "preempted": stop, "signal": signum,
            "exported": exported, "validated": validated}


def render_missing(validator: Validator, step: int, state: TrainState, staging: remote_workdir.Staging,
                   manager) -> list[str]:
    """Render the validation samples of the resumed checkpoint `step`, due but missing (`samples_missing`:
    the run was stopped or killed while rendering them), before anything else; returns [their folder]
    as named in the workdir ([] on the other processes). A signal now aborts (interrupts.py): the
    checkpoint is the state, nothing is lost."""
    if jax.process_index() == 0:
        print(f"validation: the samples of step {step} are missing (the run stopped while rendering them); "
              "rendering them from its checkpoint", flush=True)
    with out_of_memory(f"step {step}: validation sampling", validation_memory_advice(validator),
                       partial(last_checkpoint, manager)):
        validate(validator, step, state, None, None, staging)
    return [staging.remote(samples_folder(staging.local, step))] if jax.process_index() == 0 else []


def _loop(cfg: TrainingConfig, staging: remote_workdir.Staging, mesh, state: TrainState, frozen, step_fn, manager,
          next_rows, validator: Validator | None):
    """Train from `state`'s step to `max_train_steps`, saving and validating as configured; returns
    (state, step, loss of the last step, stopped by a signal, that signal). SIGTERM or Ctrl-C, also
    during validation sampling (asked after each denoising step), saves the current step and stops;
    while the first batch is read or the step compiles, it stops before training a step (nothing saved, said
    in one line: a first Ctrl-C then says nothing of saving)."""
    main = jax.process_index() == 0
    batch_size = cfg.train_batch_size
    batch_sharding = shd.batch_sharding(mesh)
    preempted = ckpt.PreemptionFlag(saves=False)  # no step to save until one is trained
    step = int(state.step)
    loss, stop, logger = float("nan"), False, None

    def stopped_before_training(when: str) -> tuple:
        if main:
            saved = f"step {step} stays the latest checkpoint" if step else "nothing saved"
            print(f"{preempted.name()} {when}: no step trained, {saved}; exiting", flush=True)
        return state, step, loss, True, preempted.signum

    try:
        first = shd.global_batch(next_rows(step), batch_sharding, batch_size)
        if preempted.reached():  # signalled while the first batch was read: no need to compile
            return stopped_before_training("before compiling")
        if main:
            print(f"compiling the train step (batch {batch_size}, {cfg.gradient_accumulation_steps} "
                  "micro-batch(es))...", flush=True)
        began = time.perf_counter()
        compiled = step_fn.lower(state, frozen, first).compile()
        advice = step_memory_advice(cfg)
        check_step_memory(compiled, advice)
        if preempted.reached():  # signalled while compiling (Python sees a signal only once compile returns)
            return stopped_before_training("while compiling")
        preempted.saves = True  # from here a stop saves the step it ends with
        if main:
            print(f"compiled in {time.perf_counter() - began:.1f} s; training from step {step}", flush=True)
        logger = MetricsLogger(staging.local, batch_size, compiled_flops(compiled), cfg.log_every_steps,
                               cfg.max_train_steps)
        while step < cfg.max_train_steps:
            batch = first if first is not None else shd.global_batch(next_rows(step), batch_sharding, batch_size)
            first = None
            with out_of_memory(f"step {step + 1}: the train step", advice,
                               partial(last_checkpoint, manager)):  # its input state is donated: gone
                state, metrics = compiled(state, frozen, batch)
                metrics = jax.device_get(metrics)
            if not metrics["finite"]:   # the state is the one before this step: save it unless saved
                ckpt.save_now(manager, step, state, run_meta(step, cfg))
                raise NonFiniteLossError(
                    f"step {step + 1}: non-finite loss {float(metrics['loss'])} (grad norm "
                    f"{float(metrics['grad_norm'])}); training stopped, the state after step {step} is saved "
                    f"in {manager.directory} (lower learning_rate, or check the data)")
            step, loss = step + 1, float(metrics["loss"])
            logger.step(step, {"loss": loss, "grad_norm": float(metrics["grad_norm"])})
            stop = preempted.reached()
            if not stop:
                if ckpt.save(manager, step, state, run_meta(step, cfg), force=step == cfg.max_train_steps):
                    staging.upload()  # TensorBoard events, as often as checkpoints
                if validator is not None and validator.due(step):  # while the checkpoint writes
                    with out_of_memory(f"step {step}: validation sampling", validation_memory_advice(validator),
                                       partial(saved_now, manager, step, state, cfg)):
                        validate(validator, step, state, logger, preempted.signalled, staging)
                    stop = preempted.reached()  # signalled while sampling: it stopped; all hosts agree
            if stop:  # preempted: no (more) validation sampling, only the step's save and its completion
                ckpt.save_now(manager, step, state, run_meta(step, cfg))
                if main:
                    last = "" if step < cfg.max_train_steps else " (the last; the same command writes the exports)"
                    unsampled = ("; its validation samples were not rendered: the same command renders them "
                                 "first" if samples_missing(cfg, staging.workdir, step) else "")
                    print(f"{preempted.name()}: saved step {step}{last}, exiting{unsampled}", flush=True)
                break
        ckpt.wait(manager)
    finally:
        preempted.restore_handler()
        manager.close()
        if logger is not None:
            logger.close()
        next_rows.close()
    return state, step, loss, stop, preempted.signum


def last_checkpoint(manager) -> str:
    """Where the newest checkpoint is, once the saves under way are written: `the state after step N is
    saved in DIR`, or `no step is saved`. Raises OutputError when one of those saves failed."""
    ckpt.wait(manager)
    latest = manager.latest_step()
    return "no step is saved" if latest is None else f"the state after step {latest} is saved in {manager.directory}"


def saved_now(manager, step: int, state: TrainState, cfg: TrainingConfig) -> str:
    """Save `step`'s state (unless saved) and say where (`last_checkpoint`)."""
    ckpt.save_now(manager, step, state, run_meta(step, cfg))
    return last_checkpoint(manager)


def run_meta(step: int, cfg: TrainingConfig) -> dict:
    """The JSON item saved with each checkpoint: the step, the input position and the run's config."""
    return {"step": step, "position": step, "config": cfg.to_dict()}


def saved_config(workdir: str, step: int) -> dict | None:
    """The config recorded with checkpoint `step` (its JSON item, read as a file: no restore, no devices);
    None when it is not there or not readable (the restore then says what is wrong)."""
    text = remote_workdir.read_text(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata"))
    try:
        config = json.loads(text or "{}").get("config")
    except (ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def refuse_layout_change(saved: dict | None, cfg: TrainingConfig, checkpoint: str) -> None:
    """UsageError naming each key (old -> new) by which `cfg` changes the tree, shapes or architecture of the trained
    state the `saved` run's checkpoints hold (`config.layout_changes`): no checkpoint of it can be
    resumed with them. Nothing when `saved` is None (not recorded) or the layout is the same."""
    changes = layout_changes(saved, cfg.to_dict()) if saved else []
    if changes:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
        one = len(changes) == 1
        raise UsageError(f"{listed}: change{'s' if one else ''} the tree, shapes or architecture of the trained state "
                         f"(parameters, optimizer state), so checkpoint {checkpoint} of this run cannot be resumed with "
                         f"{'it' if one else 'them'}; use a new --workdir, or set {'it' if one else 'them'} back")


def resume_warning(saved: dict | None, cfg: TrainingConfig, step: int) -> str | None:
    """The warning line for resuming at `step` a run whose `saved` config (None: not recorded) differs
    from `cfg` in what it computes, naming each change; with a changed learning-rate schedule, also the
    rate there under each (the optimizer continues on `cfg`'s schedule). None when nothing changed."""
    changes = config_changes(saved, cfg.to_dict()) if saved else []
    if not changes:
        return None
    listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)
    text = f"warning: resuming step {step} with a config that differs from the run's: {listed}"
    if any(key in LR_SCHEDULE_KEYS for key, _, _ in changes):
        rates = [float(learning_rate_schedule(*(c[k] for k in LR_SCHEDULE_KEYS))(step)) for c in (saved, cfg.to_dict())]
        text += (f"; the learning rate follows the new schedule from here: {rates[1]:.3g} at step {step} "
                 f"(the saved run's: {rates[0]:.3g})")
    return text


def validate(validator, step: int, state: TrainState, logger: MetricsLogger | None, stop,
             staging: remote_workdir.Staging) -> None:
    """Sample the validation prompts from the current trainable params on process 0 (every process
    takes part in gathering them) and copy the GIFs to the workdir (`staging`); the state itself is only
    read. `stop()` true after a denoising step ends the sampling there, nothing written (the caller then
    saves and exits); None: never. The time taken is left out of `logger`'s throughput (None: no logger)."""
    start = time.perf_counter()
    trained = gather(state.params)
    if jax.process_index() == 0:
        with contextlib.suppress(SamplingStopped):
            written = validator(step, trained, stop)
            staging.upload()
            print(f"validation: step {step}, {len(written)} GIFs in {staging.remote(os.path.dirname(written[0]))} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
    if logger is not None:
        logger.exclude(time.perf_counter() - start)


# ===================================== export ===================================================
def export_warning(cfg: TrainingConfig, workdir: str) -> str | None:
    """The warning line, said before training, that the motion module's .ckpt export (export_formats
    original) will not record what the module needs to be read back (`pickle_loses`), naming the export
    that does; None when there is nothing to say."""
    if cfg.motion_config is None or cfg.lora.rank or "original" not in cfg.export_formats:
        return None
    lost = pickle_loses(cfg.motion_config)
    if lost is None:
        return None
    keeps = "sample" if "diffusers" in cfg.export_formats else "add diffusers to export_formats and sample"
    return (f"warning: export_formats: original: {os.path.join(workdir, ORIGINAL_EXPORT)}: {lost}; the MotionAdapter "
            f"folder (export_formats diffusers: {os.path.join(workdir, ADAPTER_EXPORT)}) keeps them: {keeps} that, or "
            f"sample the .ckpt with --motion-heads {cfg.motion_config.num_attention_heads} --motion-norm-groups "
            f"{cfg.motion_config.norm_num_groups}")


def export_paths(cfg: TrainingConfig, workdir: str) -> list[str]:
    """The exports a finished run writes (`export` / `export_lora`; config.json with them)."""
    if cfg.lora.rank:
        names = [cfg.lora_file, FACTORS_EXPORT]
    elif cfg.motion_config is None:
        names = [UNET_EXPORT]
    else:
        names = [EXPORTS[name] for name in cfg.export_formats]
    return [os.path.join(workdir, name) for name in names]


def exports_current(cfg: TrainingConfig, workdir: str, step: int) -> bool:
    """Whether every export of `export_paths` is in `workdir` and was written from checkpoint `step`
    (`EXPORT_RECORD`; a run without one, from before the record existed, counts as not current)."""
    if not all(remote_workdir.exists(p) for p in export_paths(cfg, workdir)):
        return False
    text = remote_workdir.read_text(os.path.join(workdir, EXPORT_RECORD))
    try:
        return json.loads(text or "{}").get("step") == step
    except (ValueError, AttributeError):  # a damaged record: write the exports again
        return False


def write_export_record(workdir: str, step: int, written: list[str]) -> None:
    """`EXPORT_RECORD` for the exports `written` from checkpoint `step`, after them (atomically)."""
    with atomic_path(os.path.join(workdir, EXPORT_RECORD)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"step": step, "files": [os.path.basename(p) for p in written]}, f)


def export(cfg: TrainingConfig, workdir: str, trained: dict, motion, step: int) -> list[str]:
    """Write the trained parameters of checkpoint `step`: the motion module in the `export_formats`
    (original AnimateDiff file, diffusers MotionAdapter folder; through convert/), or the fine-tuned
    UNet subtree as params; then config.json and `EXPORT_RECORD`. Returns `export_paths`."""
    os.makedirs(workdir, exist_ok=True)
    written = export_paths(cfg, workdir)
    if motion is None:
        save_params(written[0], trained, source="animatediff_jax.train")
    else:
        writers = {"original": partial(export_original, warn=False),  # said at the start
                   "diffusers": export_adapter}
        for name, path in zip(cfg.export_formats, written):
            writers[name](trained, motion, path)
    write_config(cfg, workdir)
    write_export_record(workdir, step, written)
    return written


def export_lora(cfg: TrainingConfig, workdir: str, factors: dict, step: int) -> list[str]:
    """Write the trained LoRA factors of checkpoint `step`: motion targets as an original AnimateDiff
    MotionLoRA, spatial targets as a kohya LoRA (float32), both read back by convert/lora.py; and the
    factors themselves as `lora_factors.safetensors` (alpha in the metadata: `python -m convert
    export-motion-lora`); then config.json and `EXPORT_RECORD`. Returns `export_paths`."""
    written = export_paths(cfg, workdir)
    path, factors_path = written
    os.makedirs(workdir, exist_ok=True)
    save_params(factors_path, {"lora": factors}, source="animatediff_jax.train", metadata={"alpha": str(cfg.lora_alpha)})
    if cfg.lora.targets == "motion":
        lora.export_motion_lora(path, factors, cfg.lora_alpha)
    else:
        lora.save_kohya(path, factors, cfg.lora_alpha, dtype=np.float32)
    write_config(cfg, workdir)
    write_export_record(workdir, step, written)
    return written


def write_config(cfg: TrainingConfig, workdir: str) -> None:
    """The run's whole config as `<workdir>/config.json`."""
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=1)
