"""Regenerate every weight of the miniature AnimateDiff from scratch (fixed seeds), timing each stage.

    python -m animatediff_jax.miniature.build --out animatediff_jax/assets/miniature            # full
    python -m animatediff_jax.miniature.build --out /tmp/mini --budget smoke                   # minutes
    python -m animatediff_jax.miniature.build --out ... --stages motion                        # one stage

Stages, in order (each reads what the earlier ones wrote under --out):
  tokenizer   word-level CLIP tokenizer for the caption vocabulary        base/tokenizer/
  vae         AutoencoderKL on images of every style, then its decoder alone base/vae.safetensors
  text        CLIP text encoder, random init, frozen (never trained)      base/text_encoder.safetensors
  base        the base text-to-image UNet, trained from scratch on single frames of plain clips
              captioned with the clip's full caption ("a red circle moving left"), schedule A (SD's)
                                                                          base/unet.safetensors
  dreambooth  full fine-tune of the base UNet on "stripes" images, trigger "sks" (images only)
                                                                          dreambooth/*.safetensors
  lora        rank-r LoRA on the base's attention projections, "checker" images, trigger "xyz"
              (images only), kohya format                                 lora_checker.safetensors
  motion      motion modules trained on plain clips against the frozen base, one per noise schedule
              (B, the paper's, and A and C, its ablation)                 motion_module_{B,A,C}.safetensors
`build.json` records the budget, seeds, seconds and final loss of every stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from animatediff_jax.checkpoint import atomic_path, load_config, load_params, save_params
from animatediff_jax.miniature import lora, world
from animatediff_jax.miniature.trainer import Networks, fit
from animatediff_jax.models.configs import CLIPTextConfig, MotionConfig, UNetConfig, VAEConfig
from convert.naming import flatten, unflatten

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "miniature")
STAGES = ("tokenizer", "vae", "text", "base", "dreambooth", "lora", "motion")
DTYPE = "float16"  # storage dtype of the shipped weights
SOURCE = "animatediff_jax.miniature.build"
# Dataset seeds (disjoint streams of the procedural world) and training seeds.
SEEDS = dict(vae=0, vae_decoder=5, text=1, base_data=11, base=12, dreambooth_data=21, dreambooth=22,
             lora_data=31, lora=32, motion_data=41, motion=42)


@dataclass(frozen=True)
class Budget:
    """Steps, batch sizes and network widths of one build."""
    vae_steps: int
    vae_batch: int
    decoder_steps: int
    base_steps: int
    personalize_steps: int
    image_batch: int
    motion_steps: int
    video_batch: int
    lora_rank: int = 4
    schedules: tuple[str, ...] = ("B", "A", "C")
    vae: VAEConfig = world.VAE
    text: CLIPTextConfig = world.TEXT
    unet: UNetConfig = world.UNET
    motion: MotionConfig = world.MOTION
    learning_rates: dict = field(default_factory=lambda: dict(base=1e-3, dreambooth=2e-4, lora=1e-3, motion=5e-4))


BUDGETS = {
    "full": Budget(vae_steps=600, vae_batch=16, decoder_steps=400, base_steps=1500, personalize_steps=200,
                   image_batch=32, motion_steps=4000, video_batch=4,
                   learning_rates=dict(base=1e-3, dreambooth=2e-4, lora=1e-3, motion=1e-3)),
    # CI smoke test: every stage runs end to end at toy widths; the weights are meaningless.
    "smoke": Budget(vae_steps=2, vae_batch=2, decoder_steps=1, base_steps=2, personalize_steps=2, image_batch=2,
                    motion_steps=2, video_batch=1, lora_rank=2, schedules=("B",),
                    vae=dataclasses.replace(world.VAE, block_out_channels=(8, 8), norm_num_groups=4,
                                            down_block_types=("DownEncoderBlock2D",) * 2,
                                            up_block_types=("UpDecoderBlock2D",) * 2),
                    text=dataclasses.replace(world.TEXT, hidden_size=16, intermediate_size=32, num_hidden_layers=1),
                    unet=dataclasses.replace(world.UNET, block_out_channels=(8,), norm_num_groups=4,
                                             down_block_types=("CrossAttnDownBlock2D",),
                                             up_block_types=("CrossAttnUpBlock2D",)),
                    motion=dataclasses.replace(world.MOTION, norm_num_groups=4)),
}


# ----------------------------------------------------------------------------- files

def paths(out: str) -> dict[str, str]:
    """Where every weight of the miniature lives under `out`."""
    return dict(tokenizer=os.path.join(out, "base", "tokenizer"), vae=os.path.join(out, "base", "vae.safetensors"),
                text=os.path.join(out, "base", "text_encoder.safetensors"),
                base=os.path.join(out, "base", "unet.safetensors"), dreambooth=os.path.join(out, "dreambooth"),
                lora=os.path.join(out, "lora_checker.safetensors"), record=os.path.join(out, "build.json"))


def motion_path(out: str, schedule: str) -> str:
    return os.path.join(out, f"motion_module_{schedule}.safetensors")


def load(path: str) -> tuple[dict, object]:
    """(float32 params, config) of a file written by an earlier stage (a clear error if missing)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (see --stages)")
    params, meta = load_params(path, dtype="float32")
    return jax.tree.map(np.array, params), load_config(meta)


def tokenizer(out: str):
    from animatediff_jax.tokenizer import PromptTokenizer
    return PromptTokenizer.from_pretrained(paths(out)["tokenizer"])


def networks(out: str, motion: MotionConfig | None = None) -> tuple[Networks, dict]:
    """Configs and params {'unet', 'vae', 'text_encoder'} of the base model under `out`."""
    p = paths(out)
    (unet, unet_cfg), (vae, vae_cfg), (text, text_cfg) = load(p["base"]), load(p["vae"]), load(p["text"])
    return Networks(unet_cfg, motion, vae_cfg, text_cfg), {"unet": unet, "vae": vae, "text_encoder": text}


# ----------------------------------------------------------------------------- stages

def stage_tokenizer(out: str, budget: Budget) -> dict:
    from animatediff_jax.miniature.vocab import write_word_tokenizer
    vocab = write_word_tokenizer(paths(out)["tokenizer"], world.words(), max_length=world.MAX_TOKENS)
    return {"vocab_size": len(vocab)}


def stage_vae(out: str, budget: Budget) -> dict:
    """The autoencoder, then its decoder alone (the latents stay as they are) from the stored weights."""
    from animatediff_jax.miniature.autoencoder import train_autoencoder
    path = paths(out)["vae"]
    cfg, params, metrics = train_autoencoder(budget.vae, budget.vae_steps, batch=budget.vae_batch, seed=SEEDS["vae"])
    save_params(path, params, config=cfg, source=SOURCE, dtype=DTYPE)
    params, cfg = load(path)
    _, params, decoder = train_autoencoder(cfg, budget.decoder_steps, batch=budget.vae_batch, params=params,
                                           trainable=("decoder", "post_quant_conv"), seed=SEEDS["vae_decoder"])
    save_params(path, params, config=cfg, source=SOURCE, dtype=DTYPE)  # the latents' scaling stays
    return {"steps": budget.vae_steps, "decoder_steps": budget.decoder_steps, "batch": budget.vae_batch,
            "scaling_factor": cfg.scaling_factor, **metrics, "decoder": decoder}


def stage_text(out: str, budget: Budget) -> dict:
    """A CLIP text encoder at its Flax initialisation: random token/position features, frozen."""
    from animatediff_jax.models.clip_text import CLIPTextModel
    from animatediff_jax.miniature.vocab import BOS, EOS
    with open(os.path.join(paths(out)["tokenizer"], "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    cfg = dataclasses.replace(budget.text, vocab_size=len(vocab), bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
                              pad_token_id=vocab[EOS])
    params = jax.jit(CLIPTextModel(cfg).init)(jax.random.PRNGKey(SEEDS["text"]), jnp.zeros((1, 4), jnp.int32))
    save_params(paths(out)["text"], params["params"], config=cfg, source=SOURCE, dtype=DTYPE)
    return {"trained": False}


def stage_base(out: str, budget: Budget) -> dict:
    """The base T2I UNet from scratch (the whole UNet trains: image fine-tune mode)."""
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.pipeline import random_params
    p = paths(out)
    (vae, vae_cfg), (text, text_cfg) = load(p["vae"]), load(p["text"])
    unet_cfg = dataclasses.replace(budget.unet, cross_attention_dim=text_cfg.hidden_size)
    nets = Networks(unet_cfg, None, vae_cfg, text_cfg)
    init = random_params(UNet3DConditionModel(unet_cfg), SEEDS["base"], jnp.zeros((1, 1, 8, 8, unet_cfg.in_channels)),
                         jnp.zeros((1,)), jnp.zeros((1, 2, unet_cfg.cross_attention_dim)))
    b = budget.image_batch
    unet, loss = fit(nets, jax.tree.map(np.asarray, init), {"unet": {}, "vae": vae, "text_encoder": text},
                     lambda s: world.clip_frames(SEEDS["base_data"], s * b, b), tokenizer(out),
                     steps=budget.base_steps, schedule="A", learning_rate=budget.learning_rates["base"],
                     seed=SEEDS["base"], name="base")
    save_params(p["base"], unet, config=unet_cfg, source=SOURCE, dtype=DTYPE)
    return {"steps": budget.base_steps, "batch": b, "schedule": "A", "loss": loss}


def stage_dreambooth(out: str, budget: Budget) -> dict:
    """Full fine-tune of the base UNet on the DreamBooth domain's images (VAE, text encoder kept)."""
    p = paths(out)
    nets, base = networks(out)
    b, domain = budget.image_batch, world.DREAMBOOTH
    unet, loss = fit(nets, base["unet"], {"unet": {}, "vae": base["vae"], "text_encoder": base["text_encoder"]},
                     lambda s: world.images(SEEDS["dreambooth_data"], s * b, b, domain), tokenizer(out),
                     steps=budget.personalize_steps, schedule="A", learning_rate=budget.learning_rates["dreambooth"],
                     seed=SEEDS["dreambooth"], name="dreambooth")
    folder = p["dreambooth"]
    os.makedirs(folder, exist_ok=True)
    save_params(os.path.join(folder, "unet.safetensors"), unet, config=nets.unet, source=SOURCE, dtype=DTYPE)
    for name in ("vae", "text_encoder"):  # a DreamBooth checkpoint carries all three networks
        shutil.copyfile(os.path.join(out, "base", f"{name}.safetensors"), os.path.join(folder, f"{name}.safetensors"))
    return {"steps": budget.personalize_steps, "batch": b, "style": domain.style, "trigger": domain.trigger,
            "loss": loss}


def stage_lora(out: str, budget: Budget) -> dict:
    """LoRA factors on the frozen base UNet's attention projections, on the LoRA domain's images."""
    nets, base = networks(out)
    b, domain = budget.image_batch, world.LORA
    factors, loss = fit(nets, lora.init_factors(base["unet"], budget.lora_rank, SEEDS["lora"]),
                        {"unet": base["unet"], "vae": base["vae"], "text_encoder": base["text_encoder"]},
                        lambda s: world.images(SEEDS["lora_data"], s * b, b, domain), tokenizer(out),
                        steps=budget.personalize_steps, schedule="A", learning_rate=budget.learning_rates["lora"],
                        seed=SEEDS["lora"], name="lora", transform=lora.fuse_factors)
    lora.save_kohya(paths(out)["lora"], factors)
    return {"steps": budget.personalize_steps, "batch": b, "rank": budget.lora_rank, "style": domain.style,
            "trigger": domain.trigger, "loss": loss}


def fresh_motion_params(unet_cfg: UNetConfig, motion_cfg: MotionConfig, seed: int) -> dict:
    """A new motion module's params (N(0, 1/fan_in) weights, proj_out zero: starts as the identity)."""
    from animatediff_jax.models.unet3d import UNet3DConditionModel
    from animatediff_jax.pipeline import random_params
    from convert.motion import is_motion_path
    full = random_params(UNet3DConditionModel(unet_cfg, motion_cfg), seed,
                         jnp.zeros((1, 2, 8, 8, unet_cfg.in_channels)), jnp.zeros((1,)),
                         jnp.zeros((1, 2, unet_cfg.cross_attention_dim)))
    return unflatten({path: np.zeros_like(v) if "proj_out" in path else np.asarray(v)
                      for path, v in flatten(full).items() if is_motion_path(path)})


def save_motion(path: str, params: dict, unet_cfg: UNetConfig, motion_cfg: MotionConfig, schedule: str) -> None:
    """A motion module in the Flax format `loading.load_motion` reads (layout metadata included)."""
    info = {"block_out_channels": list(unet_cfg.block_out_channels), "layers_per_block": unet_cfg.layers_per_block,
            "version": "v2", "noise_schedule": schedule}
    save_params(path, params, config=motion_cfg, source=SOURCE, dtype=DTYPE, metadata={"motion": json.dumps(info)})


def stage_motion(out: str, budget: Budget, checkpoint_every: int = 0) -> dict:
    """One motion module per schedule, each from the same initialisation, against the frozen base.
    With `checkpoint_every`, intermediate modules are also written as motion_module_<S>.step<N>."""
    nets, base = networks(out, budget.motion)
    b, steps, lr, record = budget.video_batch, budget.motion_steps, budget.learning_rates["motion"], {}
    for schedule in budget.schedules:
        start, final = time.time(), motion_path(out, schedule)

        def checkpoint(step, module, schedule=schedule, final=final):
            save_motion(final.replace(".safetensors", f".step{step}.safetensors"), module, nets.unet,
                        nets.motion, schedule)
        module, loss = fit(nets, fresh_motion_params(nets.unet, nets.motion, SEEDS["motion"]),
                           {"unet": base["unet"], "vae": base["vae"], "text_encoder": base["text_encoder"]},
                           lambda s: world.clips(SEEDS["motion_data"], s * b, b), tokenizer(out),
                           steps=steps, schedule=schedule, learning_rate=lr,
                           seed=SEEDS["motion"], name=f"motion {schedule}", checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every)
        save_motion(final, module, nets.unet, nets.motion, schedule)
        record[schedule] = {"loss": loss, "seconds": round(time.time() - start, 1),
                            "steps": steps, "learning_rate": lr}
        print(f"[motion {schedule}] {record[schedule]['seconds']:.0f}s", flush=True)
    return {"batch": b, "frames": world.FRAMES, "schedules": record}


STAGE_FUNCTIONS = dict(tokenizer=stage_tokenizer, vae=stage_vae, text=stage_text, base=stage_base,
                       dreambooth=stage_dreambooth, lora=stage_lora, motion=stage_motion)


def record_stage(path: str, stage: str, entry: dict) -> dict:
    """Add one stage's entry to build.json (re-read first: stages may run as parallel processes;
    motion entries of different schedules are merged)."""
    record = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    if stage == "motion" and "motion" in record:
        entry = {**record["motion"], **entry, "schedules": {**record["motion"].get("schedules", {}),
                                                            **entry["schedules"]}}
    record.update(seeds=SEEDS, **{stage: entry})
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, default=str)
    return record


def build(out: str, budget: str = "full", stages=STAGES, schedules: tuple[str, ...] | None = None,
          motion_steps: int | None = None, motion_lr: float | None = None,
          motion_checkpoint_every: int = 0) -> dict:
    """Run `stages` (in the fixed order) into `out`; returns the record {stage: {seconds, ...}}.
    `schedules` / `motion_steps` / `motion_lr` override the budget's motion-module schedules (e.g.
    one per parallel process), steps and learning rate."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
    chosen = BUDGETS[budget]
    if schedules is not None:
        chosen = dataclasses.replace(chosen, schedules=tuple(schedules))
    if motion_steps is not None or motion_lr is not None:  # an override applies to every schedule
        steps = chosen.motion_steps if motion_steps is None else motion_steps
        lrs = {**chosen.learning_rates, "motion": chosen.learning_rates["motion"] if motion_lr is None else motion_lr}
        chosen = dataclasses.replace(chosen, motion_steps=steps, learning_rates=lrs)
    os.makedirs(out, exist_ok=True)
    record = {}
    for stage in (s for s in STAGES if s in stages):
        print(f"[{stage}] ...", flush=True)
        start = time.time()
        extra = {"checkpoint_every": motion_checkpoint_every} if stage == "motion" else {}
        info = STAGE_FUNCTIONS[stage](out, chosen, **extra)
        seconds = time.time() - start
        record = record_stage(paths(out)["record"], stage, {"budget": budget, "seconds": round(seconds, 1), **info})
        print(f"[{stage}] done in {seconds:.0f}s", flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m animatediff_jax.miniature.build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=ASSETS, help="output folder (default: the package's shipped weights)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--schedules", help="motion-module noise schedules to train, e.g. B or B,A,C "
                                            "(default: the budget's)")
    parser.add_argument("--motion-steps", type=int, help="motion-module training steps, every schedule "
                                                         "(default: the budget's, per schedule)")
    parser.add_argument("--motion-lr", type=float, help="motion-module peak learning rate, every schedule "
                                                        "(default: the budget's, per schedule)")
    parser.add_argument("--motion-checkpoint-every", type=int, default=0,
                        help="also write motion_module_<S>.step<N>.safetensors every N steps (default: never)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    schedules = [s.strip() for s in args.schedules.split(",")] if args.schedules else None
    if schedules and not set(schedules) <= {"A", "B", "C"}:
        parser.error(f"--schedules {args.schedules!r}: each must be A, B or C")
    start = time.time()
    try:
        record = build(args.out, args.budget, stages, schedules, args.motion_steps, args.motion_lr,
                       args.motion_checkpoint_every)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    print("stage seconds: " + ", ".join(f"{s} {record[s]['seconds']:.0f}" for s in STAGES if s in stages)
          + f"; total {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
