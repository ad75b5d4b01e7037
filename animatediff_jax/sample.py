"""Command line: `python -m animatediff_jax.sample` — text-to-video with AnimateDiff.

    python -m animatediff_jax.sample                                   # the miniature (shipped weights)
    python -m animatediff_jax.sample configs/prompts/v2-example.yaml --base models/sd15
    python -m animatediff_jax.sample --base models/sd15 --motion-module mm_sd_v15_v2.ckpt \\
        --dreambooth toonyou.safetensors --lora style.safetensors:0.8 --prompt "a cat" --seed 42

A prompt config in the original AnimateDiff schema (FORMATS.md §4) or the same settings as flags.
Outputs go to a new folder `--out/<name>-<time>` (never an earlier run's): per sample a GIF and an
MP4 (optional PNG frames, raw .npy frames), `sample.gif` with all samples in a grid, and
`config.yaml` with the seeds actually used. Every input is validated before anything compiles.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from animatediff_jax.prompt_config import PromptConfigError, PromptEntry, check_prompt_frames, draw_seeds, \
    inference_settings, load_prompt_config

SCHEDULERS = ("ddim", "euler", "euler_ancestral", "dpmpp_2m", "lcm")


class UsageError(ValueError):
    """Bad command-line input (printed as one line, exit status 2)."""


def _path_scale(arg: str, what: str) -> tuple[str, float]:
    """`PATH` or `PATH:SCALE`."""
    if ":" in arg and not os.path.exists(arg):
        path, _, scale = arg.rpartition(":")
        try:
            return path, float(scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {arg!r}: scale {scale!r} is not a number") from None
    return arg, 1.0


def _travel(arg: str) -> tuple[int, str]:
    frame, sep, prompt = arg.partition(":")
    if not sep or not frame.strip().isdigit():
        raise argparse.ArgumentTypeError(f"--travel {arg!r}: expected FRAME:PROMPT, e.g. 8:a dog running")
    return int(frame), prompt.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m animatediff_jax.sample", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", nargs="?", help="prompt config (original AnimateDiff YAML schema)")
    p.add_argument("--config", dest="config_opt", metavar="YAML", help="same as the positional config")
    m = p.add_argument_group("models (PyTorch files are converted on the fly and cached; Flax files load directly)")
    m.add_argument("--base", help="SD1.x base: diffusers folder, single file or converted folder "
                                  "(default: the miniature AnimateDiff shipped in animatediff_jax/assets/miniature)")
    m.add_argument("--dreambooth", help="personalized SD1.x checkpoint (single file)")
    m.add_argument("--lora", action="append", default=[], type=lambda a: _path_scale(a, "--lora"),
                   metavar="PATH[:SCALE]", help="LoRA (kohya/diffusers), repeatable; scale default 1.0")
    m.add_argument("--motion-module", help="AnimateDiff motion module (v1/v2/v3 file or MotionAdapter folder)")
    m.add_argument("--motion-lora", action="append", default=[], metavar="PATH[:SCALE]",
                   type=lambda a: _path_scale(a, "--motion-lora"), help="MotionLoRA, repeatable")
    m.add_argument("--domain-adapter", metavar="PATH[:SCALE]", type=lambda a: _path_scale(a, "--domain-adapter"),
                   help="v3 domain adapter LoRA")
    m.add_argument("--tokenizer", help="CLIP tokenizer folder (needed when --base is a single file)")
    m.add_argument("--diffusers-norm", action="store_true",
                   help="normalise the motion module's input over all frames jointly as diffusers does "
                        "(default: per frame, as the original and its released checkpoints)")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", action="append", help="prompt, repeatable (one video each)")
    g.add_argument("--negative-prompt", action="append", help="one (broadcast) or one per prompt")
    g.add_argument("--travel", action="append", type=_travel, metavar="FRAME:PROMPT",
                   help="prompt travel: a prompt from FRAME on, embeddings interpolated between key frames")
    g.add_argument("--seed", action="append", type=int, help="one per prompt or one for all; -1 = random")
    g.add_argument("--steps", type=int, help="denoising steps (default 25)")
    g.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default 7.5)")
    g.add_argument("--width", "--W", type=int, help="default 512 (the miniature: 32)")
    g.add_argument("--height", "--H", type=int, help="default 512 (the miniature: 32)")
    g.add_argument("--frames", "--L", type=int, help="default 16")
    g.add_argument("--scheduler", choices=SCHEDULERS, help="sampler (default: DDIM)")
    g.add_argument("--scheduler-config", default="original",
                   help="'original' (AnimateDiff: linear 0.00085-0.012, DDIM leading, offset 1), 'base' "
                        "(the base folder's scheduler config) or a scheduler_config.json path")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    g.add_argument("--context-length", type=int, help="sliding context window length (long videos)")
    g.add_argument("--context-stride", type=int, default=4, help="frames between context windows")
    g.add_argument("--context-weighting", choices=("pyramid", "uniform"), default="pyramid")
    g.add_argument("--no-noise-shuffle", action="store_true", help="no FreeNoise noise rescheduling")
    g.add_argument("--freeinit-iters", type=int, default=1, help="FreeInit passes (1 = off)")
    g.add_argument("--freeinit-filter", choices=("butterworth", "gaussian", "ideal"), default="butterworth")
    g.add_argument("--init-video", help="video-to-video: input GIF / MP4 / frame folder")
    g.add_argument("--strength", type=float, default=0.8, help="video-to-video strength in (0, 1]")
    g.add_argument("--latents", help="initial noise .npy in diffusers layout (batch, 4, frames, h, w)")
    r = p.add_argument_group("runtime and outputs")
    r.add_argument("--dtype", choices=("float32", "bfloat16"), help="default: bfloat16 on GPU/TPU, float32 on CPU")
    r.add_argument("--attention", choices=("auto", "xla", "chunked", "cudnn", "tpu_flash"), default="auto")
    r.add_argument("--decode-chunk", type=int, metavar="N",
                   help="frames the VAE decodes at once (default: the pipeline's, sized for an 8 GB card at 512x512; "
                        "larger is faster and needs more memory)")
    r.add_argument("--out", default="samples", help="parent folder of the run folder")
    r.add_argument("--batch-size", type=int, default=1,
                   help="videos per call (a seed gives the same video at any batch size; larger batches use "
                        "more memory)")
    r.add_argument("--fps", type=float, default=8.0)
    r.add_argument("--png", action="store_true", help="also write PNG frames per sample")
    r.add_argument("--save-npy", action="store_true", help="also write raw frames (F, H, W, 3) float32 .npy")
    r.add_argument("--no-progress", action="store_true", help="no per-step progress bar")
    return p


# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One model setup and the videos to sample with it."""
    entry: PromptEntry
    model: dict = field(default_factory=dict)      # AnimateDiffPipeline.load kwargs
    sizes: dict = field(default_factory=dict)      # width, height, frames


def jobs_from_args(args) -> tuple[list[Job], str]:
    """Jobs (validated, files checked) from a prompt config or from flags, and the run's name."""
    config = args.config or args.config_opt
    if args.config and args.config_opt:
        raise UsageError("give the prompt config once (positional or --config)")
    common = dict(base=args.base, tokenizer=args.tokenizer)
    if config:
        if args.prompt or args.travel:
            raise UsageError("--prompt/--travel and a prompt config are exclusive")
        if args.base is None:
            raise UsageError("a prompt config needs --base (the SD1.x model its entries build on)")
        jobs = []
        for e in load_prompt_config(config):
            model = dict(common, dreambooth=e.dreambooth_path, motion_module=e.motion_module,
                         loras=[(e.lora_model_path, e.lora_alpha)] if e.lora_model_path else [],
                         motion_loras=e.motion_module_lora_configs,
                         domain_adapter=(e.adapter_lora_path, e.adapter_lora_scale) if e.adapter_lora_path else None,
                         scheduler_kwargs=inference_settings(e.inference_config))
            sizes = dict(width=e.W or args.width or 512, height=e.H or args.height or 512,
                         frames=e.L or args.frames or 16)
            jobs.append(Job(e, model, sizes))
        return jobs, os.path.splitext(os.path.basename(config))[0]
    prompts: list = list(args.prompt or [])
    if args.travel:
        prompts.append(dict(args.travel))
    default = args.base is None
    if default and (args.dreambooth or args.motion_module or args.lora or args.motion_lora or args.domain_adapter):
        raise UsageError("--dreambooth/--lora/--motion-module/... need --base (the SD1.x model they build on)")
    if default:  # the miniature (default_model.py): its own prompts unless given some
        from animatediff_jax.default_model import DEFAULT_SAMPLE, default_jobs
        setups = default_jobs(prompts)
    elif not prompts:
        raise UsageError("no prompt: give --prompt (or --travel, or a prompt config)")
    else:
        setups = [("command line", dict(common, dreambooth=args.dreambooth, motion_module=args.motion_module,
                                        loras=args.lora, motion_loras=args.motion_lora,
                                        domain_adapter=args.domain_adapter), prompts)]
    negs = args.negative_prompt or [""]
    seeds = args.seed or [-1]
    for _, _, job_prompts in setups:
        if len(negs) not in (1, len(job_prompts)):
            raise UsageError(f"{len(negs)} --negative-prompt for {len(job_prompts)} prompts")
        if len(seeds) not in (1, len(job_prompts)):
            raise UsageError(f"{len(seeds)} --seed for {len(job_prompts)} prompts")
    for s in seeds:
        if not (s == -1 or 0 <= s < 2**64):
            raise UsageError(f"--seed {s}: must be -1 or in [0, 2**64)")
    base_sizes = DEFAULT_SAMPLE if default else dict(width=512, height=512, frames=16, steps=25)
    sizes = dict(width=args.width or base_sizes["width"], height=args.height or base_sizes["height"],
                 frames=args.frames or base_sizes["frames"])
    jobs = []
    for name, model, job_prompts in setups:
        n = len(job_prompts)
        entry = PromptEntry(name=name, prompts=job_prompts, n_prompts=negs * (n // len(negs)),
                            seeds=seeds * (n // len(seeds)), steps=args.steps or base_sizes["steps"],
                            guidance_scale=7.5 if args.guidance_scale is None else args.guidance_scale,
                            raw=_schema_raw(args, job_prompts, negs, seeds))
        jobs.append(Job(entry, dict(model, scheduler_kwargs=None), sizes))
    return jobs, "sample"


def _schema_raw(args, prompts, negs, seeds) -> dict:
    """The flags as an entry of the original prompt-config schema (written to config.yaml)."""
    raw = dict(prompt=[p if isinstance(p, str) else {int(k): v for k, v in p.items()} for p in prompts],
               n_prompt=list(negs), seed=list(seeds))
    for key, value in (("steps", args.steps), ("guidance_scale", args.guidance_scale), ("W", args.width),
                       ("H", args.height), ("L", args.frames), ("motion_module", args.motion_module),
                       ("dreambooth_path", args.dreambooth)):
        if value is not None:
            raw[key] = value
    if args.lora:
        raw["lora_model_path"], raw["lora_alpha"] = args.lora[0]
    if args.motion_lora:
        raw["motion_module_lora_configs"] = [dict(path=p, alpha=a) for p, a in args.motion_lora]
    if args.domain_adapter:
        raw["adapter_lora_path"], raw["adapter_lora_scale"] = args.domain_adapter
    return raw


def apply_overrides(job: Job, args) -> None:
    """Flags that also apply in config mode (steps, guidance)."""
    if args.config or args.config_opt:
        if args.steps:
            job.entry.steps = args.steps
        if args.guidance_scale is not None:
            job.entry.guidance_scale = args.guidance_scale


def _context(args):
    from animatediff_jax.context import ContextOptions
    if args.context_length is None:
        return None
    return ContextOptions(args.context_length, args.context_stride, args.context_weighting,
                          shuffle_noise=not args.no_noise_shuffle)


def _base_unet_config(base: str):
    """The base UNet's config from names and shapes only (no tensor data read)."""
    from animatediff_jax.checkpoint import load_config, read_metadata
    from animatediff_jax.loading import _is_converted_base
    from convert.base import plan_base
    if _is_converted_base(base):
        return load_config(read_metadata(os.path.join(base, "unet.safetensors")))
    plan = plan_base(base, check=False)
    plan.close()
    return plan.networks["unet"].config


def validate(jobs: list[Job], args, cache_dir: str) -> None:
    """Every check that can fail, for every job, before any model is compiled."""
    from animatediff_jax.freeinit import FreeInitOptions
    from animatediff_jax.loading import check_motion_fits, load_motion, require_exists
    from animatediff_jax.samplers import sampler_from_diffusers_config, start_index
    context = _context(args)
    if args.freeinit_iters > 1:
        FreeInitOptions(args.freeinit_iters, args.freeinit_filter)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.decode_chunk is not None and args.decode_chunk < 1:
        raise UsageError(f"--decode-chunk must be ≥ 1, got {args.decode_chunk}")
    if args.init_video:
        require_exists(args.init_video, "init video")
        start_index(max(j.entry.steps for j in jobs), args.strength)
    for job in jobs:
        e, s, m = job.entry, job.sizes, job.model
        where = f"{e.name}: " if len(jobs) > 1 or e.name != "command line" else ""
        if s["width"] % 8 or s["height"] % 8 or s["width"] <= 0 or s["height"] <= 0:
            raise UsageError(f"{where}width and height must be positive multiples of 8, got {s['width']}x{s['height']}")
        if s["frames"] < 1 or e.steps < 1:
            raise UsageError(f"{where}frames and steps must be positive")
        check_prompt_frames(e, s["frames"])
        for key, what in (("base", "base model"), ("dreambooth", "DreamBooth checkpoint"),
                          ("motion_module", "motion module"), ("tokenizer", "tokenizer")):
            require_exists(m.get(key), what)
        for path, _ in list(m.get("loras", [])) + list(m.get("motion_loras", [])):
            require_exists(path, "LoRA")
        if m.get("domain_adapter"):
            require_exists(m["domain_adapter"][0], "domain adapter")
        if m.get("motion_loras") and not m.get("motion_module"):
            raise UsageError(f"{where}--motion-lora needs --motion-module")
        if m.get("motion_module"):
            mm = load_motion(m["motion_module"], cache_dir)
            check_motion_fits(_base_unet_config(m["base"]), mm, m["motion_module"], m["base"])
            max_len = mm.config.max_seq_length
        else:
            max_len = None  # the frame-wise image model: no limit
        window = s["frames"] if context is None else min(context.length, s["frames"])
        if max_len is not None and window > max_len:
            raise UsageError(
                f"{where}{s['frames']} frames exceed the motion module's position encoding ({max_len})"
                + ("; use --context-length" if context is None else f": --context-length must be ≤ {max_len}"))
        cfg = _scheduler_config(args, m.get("scheduler_kwargs"))
        if isinstance(cfg, dict):  # "original"/"base" are checked when the pipeline loads
            sampler_from_diffusers_config(cfg, args.scheduler or (None if "_class_name" in cfg else "ddim"), e.steps)
        if args.latents:
            lat = np.load(args.latents, mmap_mode="r")
            want = (len(e.prompts), 4, s["frames"], s["height"] // 8, s["width"] // 8)
            if tuple(lat.shape) != want:
                raise UsageError(f"{args.latents}: latents of shape {tuple(lat.shape)}, this run needs {want} "
                                 "(batch, 4, frames, height/8, width/8)")


def _scheduler_config(args, entry_kwargs):
    """The scheduler config for AnimateDiffPipeline.load: an entry's inference config wins."""
    if entry_kwargs:
        return dict(entry_kwargs)
    sc = args.scheduler_config
    if sc in ("original", "base"):
        return sc
    if not os.path.isfile(sc):
        raise UsageError(f"--scheduler-config {sc!r}: not 'original', 'base' or an existing file")
    import json
    with open(sc) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise UsageError(f"{sc}: not valid JSON ({e})") from None


# ----------------------------------------------------------------------------- outputs

def new_run_dir(parent: str, name: str) -> str:
    """A fresh folder `parent/name-<time>` (suffixed -1, -2, ... if taken): never an earlier run's."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    os.makedirs(parent, exist_ok=True)
    k = 0
    while True:
        path = os.path.join(parent, f"{name}-{stamp}" + (f"-{k}" if k else ""))
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            k += 1


def slug(prompt) -> str:
    text = prompt if isinstance(prompt, str) else " ".join(dict(prompt).values())
    words = re.sub(r"[^\w\s-]", "", text).split()[:10]
    return "-".join(words) or "sample"


def write_sample(run_dir: str, idx: int, prompt, frames: np.ndarray, args) -> list[str]:
    from animatediff_jax import video
    stem = os.path.join(run_dir, "sample", f"{idx}-{slug(prompt)}")
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    out = [video.write_gif(stem + ".gif", frames, fps=args.fps), video.write_mp4(stem + ".mp4", frames, fps=args.fps)]
    if args.png:
        out.append(video.write_png_frames(stem, frames))
    if args.save_npy:
        from animatediff_jax.checkpoint import atomic_path
        with atomic_path(stem + ".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, frames.astype(np.float32))
        out.append(stem + ".npy")
    return out


def write_config(run_dir: str, used: list) -> str:
    import yaml
    from animatediff_jax.checkpoint import atomic_path
    from animatediff_jax.prompt_config import resolved_config
    path = os.path.join(run_dir, "config.yaml")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        yaml.safe_dump(resolved_config(used), f, sort_keys=False, allow_unicode=True)
    return path


# ----------------------------------------------------------------------------- main

def load_pipeline(job: Job, args, cache_dir: str):
    """The job's pipeline and a notice to print (None)."""
    from animatediff_jax.pipeline import AnimateDiffPipeline
    m = dict(job.model)
    sched = _scheduler_config(args, m.pop("scheduler_kwargs"))
    pipe = AnimateDiffPipeline.load(**m, scheduler=args.scheduler, scheduler_config=sched, dtype=args.dtype,
                                    attention_impl=args.attention,
                                    motion_input_norm="joint" if args.diffusers_norm else "frame",
                                    cache_dir=cache_dir,
                                    **({} if args.decode_chunk is None else {"decode_chunk_size": args.decode_chunk}))
    return pipe, None


def run(args, argv: list[str]) -> str:
    """Validate, load, sample and write; returns the run folder."""
    from animatediff_jax.freeinit import FreeInitOptions
    from animatediff_jax.pipeline import DEFAULT_CACHE, enable_compilation_cache, from_diffusers_latents

    cache_dir = os.environ.get("ANIMATEDIFF_JAX_CACHE", DEFAULT_CACHE)
    jobs, name = jobs_from_args(args)
    for job in jobs:
        apply_overrides(job, args)
    validate(jobs, args, cache_dir)
    enable_compilation_cache()
    context = _context(args)
    freeinit = FreeInitOptions(args.freeinit_iters, args.freeinit_filter) if args.freeinit_iters > 1 else None
    run_dir = new_run_dir(args.out, name)
    print(f"writing to {run_dir}")
    from animatediff_jax.checkpoint import atomic_path
    with atomic_path(os.path.join(run_dir, "command.txt")) as tmp, open(tmp, "w") as f:
        f.write(" ".join(["python -m animatediff_jax.sample"] + [repr(a) if " " in a else a for a in argv]) + "\n")
    samples, used, idx = [], [], 0
    for job in jobs:
        e, s = job.entry, job.sizes
        pipe, notice = load_pipeline(job, args, cache_dir)
        if notice:
            print(f"NOTE: {notice}")
        seeds = draw_seeds(e.seeds)
        latents = from_diffusers_latents(np.load(args.latents)) if args.latents else None
        init_video = None
        if args.init_video:
            from animatediff_jax.video import read_video
            init_video = read_video(args.init_video, num_frames=s["frames"], size=(s["height"], s["width"]))
        print(f"{e.name}: {len(e.prompts)} video(s), {s['frames']}x{s['height']}x{s['width']}, {e.steps} steps, "
              f"seeds {seeds}")
        n = args.batch_size
        for i in range(0, len(e.prompts), n):
            result = pipe(e.prompts[i:i + n], e.n_prompts[i:i + n], seeds[i:i + n], width=s["width"],
                          height=s["height"], frames=s["frames"], steps=e.steps, guidance_scale=e.guidance_scale,
                          eta=args.eta, latents=None if latents is None else latents[i:i + n], context=context,
                          freeinit=freeinit, init_video=init_video,
                          strength=args.strength if init_video is not None else 1.0, progress=not args.no_progress)
            for prompt, frames in zip(e.prompts[i:i + n], result.frames):
                for path in write_sample(run_dir, idx, prompt, frames, args):
                    print(f"  wrote {path}")
                samples.append(frames)
                idx += 1
        e.raw.update(W=s["width"], H=s["height"], L=s["frames"], steps=e.steps, guidance_scale=e.guidance_scale)
        used.append((e, seeds))  # the settings actually used (the original also records W, H, L)
    from animatediff_jax import video
    if len({x.shape for x in samples}) == 1:
        grid = video.write_grid(os.path.join(run_dir, "sample.gif"), np.stack(samples), fps=args.fps)
        print(f"wrote {grid}")
    else:
        print("samples differ in size: no grid written")
    print(f"wrote {write_config(run_dir, used)}")
    return run_dir


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        run(args, argv)
    except (UsageError, PromptConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad weights, sizes, settings: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
