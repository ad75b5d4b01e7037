"""The miniature's build stages (tokenizer, VAE, text encoder, base, DreamBooth, LoRA, motion
modules) and `build`, which runs them in order into a folder; the CLI is `miniature/build.py`.
Each stage reads what the earlier ones wrote; `build.json` records budget, seeds, seconds, loss."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time

import jax
import numpy as np

from animatediff_jax.checkpoint import load_config, load_params, network_config, save_params
from animatediff_jax.errors import InputError, UsageError
from animatediff_jax.miniature import lora, world
from animatediff_jax.miniature.budget import BUDGETS, DTYPE, SEEDS, SOURCE, STAGES, Budget
from animatediff_jax.miniature.shipped import MOTION_LORA_DIRECTION, motion_path, paths, read_record
from animatediff_jax.miniature.trainer import Networks, fit
from animatediff_jax.models.configs import MotionConfig, UNetConfig
from animatediff_jax.nonfinite import describe, find_nonfinite
from animatediff_jax.outputs import atomic_path
from animatediff_jax.params import flatten, insert_motion, unflatten

# ----------------------------------------------------------------------------- files

def load(path: str, network: str | None = None) -> tuple[dict, object]:
    """(float32 params, config) of a file written by an earlier stage. InputError naming the file when
    it is missing, holds non-finite values, or holds another network than `network` ("unet", "vae",
    "text_encoder" or "motion": `checkpoint.network_config`; a file without a network config, such as
    a LoRA, is none of them)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: not found; run the stage that writes it first (see --stages)")
    params, meta = load_params(path, dtype="float32")
    config = network_config(meta, path, network) if network else load_config(meta)
    if network and config is None:
        raise InputError(f"{path}: holds no network config, so not the {network} file the build writes "
                         "(a LoRA, or a file from elsewhere?)")
    found = find_nonfinite(params)
    if found:
        raise InputError(f"{path}: {describe(found)}; run the stage that writes it again")
    return jax.tree.map(np.array, params), config


def tokenizer(out: str):
    """The build's tokenizer (InputError naming its folder when it cannot be read)."""
    from animatediff_jax.tokenizer import PromptTokenizer, check_tokenizer
    folder = paths(out)["tokenizer"]
    if check_tokenizer(folder, "tokenizer") is None:  # InputError for damaged files
        raise InputError(f"{folder}: no tokenizer files (vocab.json + merges.txt); run the tokenizer stage again")
    return PromptTokenizer.from_pretrained(folder)


def networks(out: str, motion: MotionConfig | None = None) -> tuple[Networks, dict]:
    """Configs and params {'unet', 'vae', 'text_encoder'} of the base model under `out`."""
    p = paths(out)
    (unet, unet_cfg), (vae, vae_cfg), (text, text_cfg) = (
        load(p["base"], "unet"), load(p["vae"], "vae"), load(p["text"], "text_encoder"))
    return Networks(unet_cfg, motion, vae_cfg, text_cfg), {"unet": unet, "vae": vae, "text_encoder": text}


def networks_with_module(out: str, schedule: str = "B") -> tuple[Networks, dict]:
    """`networks` with the motion module of `schedule` under `out` put into the base UNet (its config
    as `motion`): what the MotionLoRA trains on and the direction probe measures. InputError naming a
    missing, damaged or wrong module file (`load`)."""
    nets, base = networks(out)
    module, motion_cfg = load(motion_path(out, schedule), "motion")
    return (dataclasses.replace(nets, motion=motion_cfg),
            {**base, "unet": insert_motion(base["unet"], module, strict=False)})


# ----------------------------------------------------------------------------- stages

def stage_tokenizer(out: str, budget: Budget) -> dict:
    from animatediff_jax.miniature.vocab import write_word_tokenizer
    vocab = write_word_tokenizer(paths(out)["tokenizer"], world.words(), max_length=world.MAX_TOKENS)
    return {"vocab_size": len(vocab)}


def stage_vae(out: str, budget: Budget) -> dict:
    """The autoencoder, then its decoder alone (the latents stay as they are) from the stored weights."""
    from animatediff_jax.miniature.autoencoder import DECODER, train_autoencoder
    path = paths(out)["vae"]
    lr = budget.learning_rates["vae"]
    cfg, params, metrics = train_autoencoder(budget.vae, budget.vae_steps, batch=budget.vae_batch, learning_rate=lr,
                                             seed=SEEDS["vae"])
    save_params(path, params, config=cfg, source=SOURCE, dtype=DTYPE)
    params, cfg = load(path)
    _, params, decoder = train_autoencoder(cfg, budget.decoder_steps, batch=budget.vae_batch, params=params,
                                           learning_rate=lr / 2,
                                           trainable=DECODER, seed=SEEDS["vae_decoder"])
    save_params(path, params, config=cfg, source=SOURCE, dtype=DTYPE)  # the latents' scaling stays
    return {"steps": budget.vae_steps, "decoder_steps": budget.decoder_steps, "batch": budget.vae_batch,
            "learning_rate": lr,
            "scaling_factor": cfg.scaling_factor, **metrics, "decoder": decoder}


def stage_text(out: str, budget: Budget) -> dict:
    """The CLIP text encoder, pre-trained contrastively against the world's clips and images of every
    domain (`text_pretraining.py`), then frozen for every later stage, as SD's CLIP is."""
    from animatediff_jax.miniature.text_pretraining import pretrain_text_encoder
    from animatediff_jax.miniature.vocab import BOS, EOS
    words = tokenizer(out)  # a clear error for an unreadable folder before the vocabulary is read here
    with open(os.path.join(paths(out)["tokenizer"], "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    cfg = dataclasses.replace(budget.text, vocab_size=len(vocab), bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                              pad_token_id=vocab[EOS])
    params, metrics = pretrain_text_encoder(cfg, words, steps=budget.text_steps, batch=budget.text_batch,
                                            pool=budget.text_pool, seed=SEEDS["text"], data_seed=SEEDS["text_data"])
    save_params(paths(out)["text"], params, config=cfg, source=SOURCE, dtype=DTYPE)
    return {"trained": True, "steps": budget.text_steps, "batch": budget.text_batch, "pool": budget.text_pool,
            **metrics}


def stage_base(out: str, budget: Budget) -> dict:
    """The base T2I UNet from scratch (the whole UNet trains: image fine-tune mode)."""
    from animatediff_jax.models.init import example_inputs, random_params
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    p = paths(out)
    (vae, vae_cfg), (text, text_cfg) = load(p["vae"], "vae"), load(p["text"], "text_encoder")
    unet_cfg = dataclasses.replace(budget.unet, cross_attention_dim=text_cfg.hidden_size)
    nets = Networks(unet_cfg, None, vae_cfg, text_cfg)
    network = UNet3DConditionModel(unet_cfg)
    init = random_params(network, SEEDS["base"], *example_inputs(network))
    b = budget.image_batch
    unet, loss, _ = fit(nets, jax.tree.map(np.asarray, init), {"unet": {}, "vae": vae, "text_encoder": text},
                        lambda s: world.clip_frames(SEEDS["base_data"], s * b, b), tokenizer(out),
                        steps=budget.base_steps, schedule="A", learning_rate=budget.learning_rates["base"],
                        seed=SEEDS["base"], name="base")
    save_params(p["base"], unet, config=unet_cfg, source=SOURCE, dtype=DTYPE)
    return {"steps": budget.base_steps, "batch": b, "schedule": "A", "loss": loss}


def stage_decoder(out: str, budget: Budget) -> dict:
    """The VAE's decoder fine-tuned on the base UNet's denoised latents (`denoised_decoder.py`); the encoder,
    hence every latent, stays as it is. It runs after the DreamBooth stage, whose checkpoint keeps the VAE
    it was trained with (the tuned decoder drew its stripes plain: domain fidelity 96% -> 71%). Refused
    (InputError) when base/vae.safetensors is the file this stage last wrote (build.json records its
    sha256): it would fine-tune the tuned decoder again."""
    from animatediff_jax.miniature.denoised_decoder import train_denoised_decoder
    p = paths(out)
    if os.path.isfile(p["vae"]) and read_record(out).get("decoder", {}).get("vae_sha256") == sha256_of(p["vae"]):
        raise InputError(f"{p['vae']}: its decoder was fine-tuned by the decoder stage already (build.json); "
                         "to fine-tune a fresh one, run --stages vae,decoder")
    nets, params = networks(out)
    vae, metrics = train_denoised_decoder(nets, params, tokenizer(out), budget.denoised_decoder_steps,
                                          batch=budget.image_batch // 2, learning_rate=budget.learning_rates["decoder"],
                                          max_timestep=budget.denoised_max_timestep, seed=SEEDS["decoder"],
                                          data_seed=SEEDS["decoder_data"])
    save_params(p["vae"], vae, config=nets.vae, source=SOURCE, dtype=DTYPE)  # scaling_factor stays
    return {"steps": budget.denoised_decoder_steps, "batch": budget.image_batch,
            "learning_rate": budget.learning_rates["decoder"], "max_timestep": budget.denoised_max_timestep,
            "schedule": "A", **metrics, "vae_sha256": sha256_of(p["vae"])}


def sha256_of(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stage_dreambooth(out: str, budget: Budget) -> dict:
    """Full fine-tune of the base UNet on single frames of the world's clips drawn on the DreamBooth
    domain's background, captioned like the base's data (`world.clip_frames`; VAE, text encoder kept)."""
    p = paths(out)
    nets, base = networks(out)
    b, domain = budget.image_batch, world.DREAMBOOTH
    unet, loss, _ = fit(nets, base["unet"], {"unet": {}, "vae": base["vae"], "text_encoder": base["text_encoder"]},
                        lambda s: world.clip_frames(SEEDS["dreambooth_data"], s * b, b, domain), tokenizer(out),
                        steps=budget.dreambooth_steps, schedule="A", learning_rate=budget.learning_rates["dreambooth"],
                        seed=SEEDS["dreambooth"], name="dreambooth")
    folder = p["dreambooth"]
    os.makedirs(folder, exist_ok=True)
    save_params(os.path.join(folder, "unet.safetensors"), unet, config=nets.unet, source=SOURCE, dtype=DTYPE)
    for name in ("vae", "text_encoder"):  # a DreamBooth checkpoint carries all three networks
        shutil.copyfile(os.path.join(out, "base", f"{name}.safetensors"), os.path.join(folder, f"{name}.safetensors"))
    return {"steps": budget.dreambooth_steps, "batch": b, "learning_rate": budget.learning_rates["dreambooth"],
            "style": domain.style, "trigger": domain.trigger, "loss": loss}


def stage_lora(out: str, budget: Budget) -> dict:
    """LoRA factors (`lora.TARGETS`) on the frozen base UNet, trained on single frames of the world's
    clips drawn on the LoRA domain's background and captioned like the base's data (`world.clip_frames`).
    With the DreamBooth stage's data (still images, no motion words) the LoRA kept its domain in images
    but the motion module barely moved its videos (RESULTS.md)."""
    nets, base = networks(out)
    b, domain, lr = budget.image_batch, world.LORA, budget.learning_rates["lora"]
    factors, loss, _ = fit(nets, lora.init_factors(base["unet"], budget.lora_rank, SEEDS["lora"]),
                           {"unet": base["unet"], "vae": base["vae"], "text_encoder": base["text_encoder"]},
                           lambda s: world.clip_frames(SEEDS["lora_data"], s * b, b, domain), tokenizer(out),
                           steps=budget.lora_steps, schedule="A", learning_rate=lr,
                           seed=SEEDS["lora"], name="lora", transform=lora.fuse_factors)
    lora.save_kohya(paths(out)["lora"], factors)
    return {"steps": budget.lora_steps, "batch": b, "learning_rate": lr, "rank": budget.lora_rank,
            "layers": len(factors["lora"]), "style": domain.style, "trigger": domain.trigger, "loss": loss}


def fresh_motion_params(unet_cfg: UNetConfig, motion_cfg: MotionConfig, seed: int) -> dict:
    """A new motion module's params (N(0, 1/fan_in) weights, proj_out zero: starts as the identity)."""
    from animatediff_jax.models.init import example_inputs, random_params
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.params import is_motion_path
    network = UNet3DConditionModel(unet_cfg, motion_cfg)
    full = random_params(network, seed, *example_inputs(network))
    return unflatten({path: np.zeros_like(v) if "proj_out" in path else np.asarray(v)
                      for path, v in flatten(full).items() if is_motion_path(path)})


def save_motion(path: str, params: dict, unet_cfg: UNetConfig, motion_cfg: MotionConfig, schedule: str) -> None:
    """A motion module in the Flax format `loading.load_motion` reads (layout metadata included)."""
    info = {"block_out_channels": list(unet_cfg.block_out_channels), "layers_per_block": unet_cfg.layers_per_block,
            "version": "v2", "noise_schedule": schedule}
    save_params(path, params, config=motion_cfg, source=SOURCE, dtype=DTYPE, metadata={"motion": json.dumps(info)})


def remove_step_files(final: str, name: str) -> None:
    """Remove the step files (`final` as <name>.step<N>.safetensors) an earlier run left beside `final`, with
    one line naming them: a run starting at step 0 makes them stale (other settings, or a finished run)."""
    folder, stem = os.path.split(final)
    pattern = re.compile(re.escape(stem.replace(".safetensors", "")) + r"\.step\d+\.safetensors")
    stale = sorted(f for f in os.listdir(folder or ".") if pattern.fullmatch(f))
    for f in stale:
        os.remove(os.path.join(folder, f))
    if stale:
        print(f"  {name}: starting at step 0; removed the step files of an earlier run: {', '.join(stale)}", flush=True)


def stage_motion(out: str, budget: Budget, checkpoint_every: int = 0) -> dict:
    """One motion module per schedule, each from the same initialisation, against the frozen base.
    With `checkpoint_every`, intermediate modules are also written as motion_module_<S>.step<N>, and
    the training state as motion_module_<S>.resume.msgpack: a build stopped part-way (a killed process,
    a session's end) continues from there when run again with the same settings."""
    nets, base = networks(out, budget.motion)
    b, steps, lr, record = budget.video_batch, budget.motion_steps, budget.learning_rates["motion"], {}
    for schedule in budget.schedules:
        final = motion_path(out, schedule)

        def checkpoint(step, module, schedule=schedule, final=final):
            save_motion(final.replace(".safetensors", f".step{step}.safetensors"), module, nets.unet,
                        nets.motion, schedule)
        module, loss, seconds = fit(nets, fresh_motion_params(nets.unet, nets.motion, SEEDS["motion"]),
                                    {"unet": base["unet"], "vae": base["vae"], "text_encoder": base["text_encoder"]},
                                    lambda s: world.clips(SEEDS["motion_data"], s * b, b), tokenizer(out),
                                    steps=steps, schedule=schedule, learning_rate=lr,
                                    seed=SEEDS["motion"], name=f"motion {schedule}", checkpoint=checkpoint,
                                    checkpoint_every=checkpoint_every,
                                    resume=final.replace(".safetensors", ".resume.msgpack") if checkpoint_every else None,
                                    starting=lambda final=final, schedule=schedule: remove_step_files(
                                        final, f"motion {schedule}"))
        save_motion(final, module, nets.unet, nets.motion, schedule)
        record[schedule] = {"loss": loss, "seconds": round(seconds, 1),  # every part of a resumed run
                            "steps": steps, "learning_rate": lr}
        # recorded now, not only when the stage ends: a process stopped during the next schedule
        # (several take hours) keeps this one's record; `build` completes the entry at the stage's end
        record_stage(out, "motion", {**read_record(out).get("motion", {}), "schedules": {schedule: record[schedule]}})
        print(f"[motion {schedule}] {record[schedule]['seconds']:.0f}s", flush=True)
    return {"batch": b, "frames": world.FRAMES, "schedules": record,
            "seconds": round(sum(r["seconds"] for r in record.values()), 1)}  # over resumed parts too


def stage_motion_lora(out: str, budget: Budget) -> dict:
    """A MotionLoRA (the paper's v2 way to a new motion: rank-r factors on the motion module's attention
    projections, module and UNet frozen), trained on plain clips that all move one way
    (`world.moving_clips`) with their own captions, schedule B; written in the original MotionLoRA
    format, so the sampler applies it like a community one (`--motion-lora file:scale`)."""
    from animatediff_jax.training.lora import export_motion_lora, init_factors
    nets, base = networks_with_module(out)
    unet = base["unet"]
    b, direction, rank = budget.video_batch, MOTION_LORA_DIRECTION, budget.motion_lora_rank
    lr = budget.learning_rates["motion_lora"]
    factors, loss, _ = fit(nets, {"lora": init_factors(unet, "motion", rank, SEEDS["motion_lora"])},
                           {"unet": unet, "vae": base["vae"], "text_encoder": base["text_encoder"]},
                           lambda s: world.moving_clips(SEEDS["motion_lora_data"], direction, s * b, b), tokenizer(out),
                           steps=budget.motion_lora_steps, schedule="B", learning_rate=lr,
                           seed=SEEDS["motion_lora"], name="motion lora", transform=lora.fuse_factors)
    export_motion_lora(paths(out)["motion_lora"], factors["lora"], alpha=rank, dtype=np.float16)
    return {"steps": budget.motion_lora_steps, "batch": b, "learning_rate": lr, "rank": rank,
            "layers": len(factors["lora"]), "direction": direction, "loss": loss}


STAGE_FUNCTIONS = dict(tokenizer=stage_tokenizer, vae=stage_vae, text=stage_text, base=stage_base,
                       decoder=stage_decoder, dreambooth=stage_dreambooth, lora=stage_lora, motion=stage_motion,
                       motion_lora=stage_motion_lora)


def record_stage(out: str, stage: str, entry: dict) -> dict:
    """Add one stage's entry to `out`'s build.json, replacing the stage's old entry (re-read first: stages
    may run as parallel processes; a motion entry keeps the old entry's other schedules, nothing else)."""
    record = read_record(out)
    if stage == "motion" and "motion" in record:
        entry = {**entry, "schedules": {**record["motion"].get("schedules", {}), **entry["schedules"]}}
    record.update(seeds=SEEDS, **{stage: entry})
    with atomic_path(paths(out)["record"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, default=str)
    return record


def seconds_text(recorded: float, this_run: float) -> str:
    """A stage's seconds as build.json records them ('63s'), and, when they include earlier runs that
    this one resumed (a motion stage's `fit` counts every part), this run's share of them."""
    if recorded - this_run < 1:
        return f"{recorded:.0f}s"
    return f"{recorded:.0f}s ({this_run:.0f}s in this run, the rest in the earlier runs it resumed)"


def build(out: str, budget: str = "full", stages=STAGES, schedules: tuple[str, ...] | None = None,
          motion_steps: int | None = None, motion_lr: float | None = None,
          motion_checkpoint_every: int = 0) -> dict:
    """Run `stages` (in the fixed order) into `out`; returns the record {stage: {seconds, ...}}.
    `schedules` / `motion_steps` / `motion_lr` override the budget's motion-module schedules (e.g.
    one per parallel process), steps and learning rate."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise UsageError(f"--stages: unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
    chosen = BUDGETS[budget]
    if schedules is not None:
        chosen = dataclasses.replace(chosen, schedules=tuple(schedules))
    if motion_steps is not None or motion_lr is not None:  # an override applies to every schedule
        steps = chosen.motion_steps if motion_steps is None else motion_steps
        lrs = {**chosen.learning_rates, "motion": chosen.learning_rates["motion"] if motion_lr is None else motion_lr}
        chosen = dataclasses.replace(chosen, motion_steps=steps, learning_rates=lrs)
    os.makedirs(out, exist_ok=True)
    record = read_record(out)  # an unreadable build.json stops the build before any stage, not after one
    for stage in (s for s in STAGES if s in stages):
        print(f"[{stage}] ...", flush=True)
        start = time.time()
        extra = {"checkpoint_every": motion_checkpoint_every} if stage == "motion" else {}
        info = STAGE_FUNCTIONS[stage](out, chosen, **extra)
        seconds = time.time() - start
        record = record_stage(out, stage, {"budget": budget, "seconds": round(seconds, 1), **info})
        print(f"[{stage}] done in {seconds_text(record[stage]['seconds'], seconds)}", flush=True)
    return record
