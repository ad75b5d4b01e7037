"""Command line: `python -m animatediff_jax.sample` — text-to-video with AnimateDiff.

    python -m animatediff_jax.sample                                   # the miniature (shipped weights)
    python -m animatediff_jax.sample configs/prompts/v2-example.yaml --base models/sd15
    python -m animatediff_jax.sample --base models/sd15 --motion-module mm_sd_v15_v2.ckpt \\
        --dreambooth toonyou.safetensors --lora style.safetensors:0.8 --prompt "a cat" --seed 42
    python -m animatediff_jax.sample samples/sample-2026-01-01T12-00-00/config.yaml   # the same videos again

A prompt config in the original AnimateDiff schema (FORMATS.md §4) or the same settings as flags.
Every flag and config value is checked (type, range, finiteness, files, sizes against the models'
configs) before any model loads, and so is the run's estimated peak memory against the memory
available (`memory_estimate`; --allow-over-memory skips that). Outputs go to a new folder
`--out/<name>-<time>` that appears only when the run is complete (never an earlier run's): per
sample a GIF and an MP4 under `sample/` (optional PNG frames, raw .npy frames), `sample.gif` with
all samples in a grid, `command.txt`, and `config.yaml`: the entries with the seeds actually used
and, under `sample_options`, every other setting that shapes the videos, so that re-running it
reproduces them.

Precedence: a flag given on the command line > the entry's key (`W`, `H`, `L`, `steps`,
`guidance_scale`, `clip_skip`) or `sample_options` > the default.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from animatediff_jax.errors import InputError, OutputError, UsageError, UserError, plain_warnings, run_cli
from animatediff_jax.text_files import read_json_object
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.nonfinite import why_nonfinite
from animatediff_jax.outputs import write_failure
from animatediff_jax.sampling.prompt_config import (PromptEntry, check_prompt_frames, draw_seeds,
                                                     inference_config, load_prompt_config, model_keys, resolved_config,
                                                     travel_frame_problem)
from animatediff_jax.run_folder import check_writable_parent, run_folder, slug
from animatediff_jax.scale_limits import CONDITIONING, GUIDANCE, LORA, MOTION, scale_problem
from animatediff_jax.sample_control import check_controls, entry_keys, load_controls, specs_from_entry, specs_from_flags
from animatediff_jax.sample_flags import (CONTEXT_SETTINGS, DEFAULT_STRENGTH, ENTRY_FLAGS, MODEL_INPUT_FLAGS, PROG,
                                         build_parser, option_tokens, options_of)
from animatediff_jax.yaml_file import dump_yaml

# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One model setup and the videos to sample with it, every setting resolved and checked."""
    entry: PromptEntry
    opts: argparse.Namespace  # this job's settings: the flags over the entry's sample_options
    model: dict  # loading.load_pipeline kwargs for the files
    sizes: dict  # width, height, frames
    clip_skip: int = 0
    scheduler_config: str | dict = "original"
    motion_scale: float = 1.0
    motion_block_scales: dict = field(default_factory=dict)
    controls: list = field(default_factory=list)  # sample_control.ControlSpec
    context: object = None  # ContextOptions, made by `validate`
    checked: object = None  # loading.CheckedFiles of `model`, made by `validate`
    latents: np.ndarray | None = field(default=None, repr=False)  # read by `validate`
    init_video: np.ndarray | None = field(default=None, repr=False)
    control_inputs: list = field(default_factory=list, repr=False)  # control.Control, made by `validate`
    config: str | None = None  # the prompt config it comes from (None: flags)


def jobs_from_args(args, argv: list[str]) -> tuple[list[Job], str]:
    """Jobs from a prompt config or from flags, and the run's name (values checked, files not yet)."""
    config = args.config or args.config_opt
    if args.config and args.config_opt:
        raise UsageError("--config: give the prompt config once (positional or --config)")
    if config:
        given = [flag for dest, flag in ENTRY_FLAGS.items() if getattr(args, dest)]
        if given:
            raise UsageError(f"{given[0]}: not with a prompt config (its entries name prompts, seeds and weights; "
                             "a flag would apply to none or all of them)")
        return [_config_job(e, argv, config) for e in load_prompt_config(config)], Path(config).stem
    return _flag_jobs(args), "sample"


def _config_job(e: PromptEntry, argv: list[str], config: str) -> Job:
    where = f"{config}: {e.name}: sample_options"
    tokens = option_tokens(e.raw.get("sample_options") or {}, where)
    try:  # argv parsed already: an error here is the entry's
        opts = build_parser().parse_args(tokens + argv)
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None
    if opts.base is None:
        raise UsageError("--base: a prompt config needs the SD1.x model its entries build on")
    motion, scheduler_kwargs = inference_config(e.inference_config)
    if opts.motion_version:  # the flag says what the user knows; it wins over the inference config
        motion = dict(version=opts.motion_version)
    clip_skip = e.raw.get("clip_skip", 0)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 0:
        raise UsageError(f"{config}: {e.name}: clip_skip must be an integer ≥ 0, got {clip_skip!r}")
    e.steps, e.guidance_scale = _first(opts.steps, e.steps), _first(opts.guidance_scale, e.guidance_scale)
    model = dict(base=opts.base, tokenizer=opts.tokenizer, dreambooth=e.dreambooth_path,
                 motion_module=e.motion_module, motion_loras=e.motion_module_lora_configs,
                 unet_checkpoint=e.unet_checkpoint,
                 loras=list(e.loras), lora_alpha_rule=e.lora_alpha_rule,
                 domain_adapter=(e.adapter_lora_path, e.adapter_lora_scale) if e.adapter_lora_path else None,
                 motion_version=motion.get("version"), motion_max_seq_length=motion.get("max_seq_length"),
                 motion_heads=opts.motion_heads, motion_norm_groups=opts.motion_norm_groups,
                 variant=opts.variant)
    sizes = dict(width=_given(opts.width, e.W), height=_given(opts.height, e.H),  # None: the base's own size
                 frames=_first(opts.frames, e.L, 16))
    return Job(e, opts, model, sizes, clip_skip=_first(opts.clip_skip, clip_skip),
               scheduler_config=scheduler_kwargs or scheduler_source(opts.scheduler_config),
               motion_scale=_first(opts.motion_scale, e.motion_scale),
               motion_block_scales=_first(opts.motion_block_scales, e.motion_block_scales),
               controls=specs_from_entry(e), config=config)


def _first(*values):
    return next(v for v in values if v is not None)


def _given(*values):
    """The first value given, or None (a size the base model's geometry then decides, in `validate`)."""
    return next((v for v in values if v is not None), None)


def _flag_jobs(args) -> list[Job]:
    prompts: list = list(args.prompt or [])
    if args.travel:
        frames = [f for f, _ in args.travel]
        twice = sorted({f for f in frames if frames.count(f) > 1})
        if twice:
            raise UsageError(f"--travel: frame(s) {twice} given twice (one prompt per key frame)")
        prompts.append(dict(args.travel))
    from animatediff_jax.miniature.shipped import DEFAULT_SAMPLE, MINIATURE, default_jobs, motion_path  # noqa: PLC0415
    given = args.dreambooth or args.motion_module or args.lora or args.motion_lora or args.domain_adapter
    default = args.base is None and not given
    model_flags = [flag for dest, flag in MODEL_INPUT_FLAGS.items() if getattr(args, dest)]
    if model_flags and not prompts:  # the usage problem before any file of theirs is looked for
        raise UsageError(f"--prompt: no prompt ({model_flags[0]} given: model flags need --prompt or --travel; "
                         "the miniature's own prompts are used only when no model flag is given)")
    if args.base is None and args.tokenizer:
        raise UsageError("--tokenizer: goes with a single-file --base (the miniature carries its own tokenizer)")
    base = args.base or os.path.join(MINIATURE, "base")  # model flags alone build on the shipped miniature,
    motion_module = None if args.motion_module == "none" else \
        args.motion_module or (motion_path(MINIATURE, "B") if args.base is None else None)  # its module included
    if default:  # the miniature's own jobs (miniature/shipped.py), its own prompts unless given some
        setups = default_jobs(prompts)
    else:
        setups = [("command line", dict(base=base, dreambooth=args.dreambooth, motion_module=motion_module,
                                        loras=args.lora, motion_loras=args.motion_lora,
                                        domain_adapter=args.domain_adapter), prompts)]
    negs, seeds = args.negative_prompt or [""], args.seed or [-1]
    sizes = DEFAULT_SAMPLE if default else dict(width=None, height=None, frames=16, steps=25)  # None: the base's
    controls = specs_from_flags(args)
    jobs = []
    for name, model, job_prompts in setups:
        n = len(job_prompts)
        videos = f"{n} videos ({n - bool(args.travel)} --prompt + 1 --travel)" if args.travel else f"{n} prompts"
        if len(negs) not in (1, n):
            raise UsageError(f"--negative-prompt: {len(negs)} given for {videos} (give one, or one per video)")
        if len(seeds) not in (1, n):
            raise UsageError(f"--seed: {len(seeds)} given for {videos} (give one, or one per video)")
        entry = PromptEntry(name=name, prompts=job_prompts, n_prompts=negs * (n // len(negs)),
                            seeds=seeds * (n // len(seeds)), steps=_first(args.steps, sizes["steps"]),
                            guidance_scale=_first(args.guidance_scale, 7.5))
        entry.raw = dict(_entry_of_flags(model, entry), **entry_keys(controls))
        model = dict(dict(tokenizer=args.tokenizer, loras=[], motion_loras=[]), **model, lora_alpha_rule="kohya",
                     motion_version=args.motion_version, motion_max_seq_length=None, variant=args.variant,
                     motion_heads=args.motion_heads, motion_norm_groups=args.motion_norm_groups)
        size = {k: _given(getattr(args, k), sizes[k]) for k in ("width", "height", "frames")}
        jobs.append(Job(entry, args, model, size, clip_skip=_first(args.clip_skip, 0),
                        scheduler_config=scheduler_source(args.scheduler_config),
                        motion_scale=_first(args.motion_scale, 1.0), motion_block_scales=args.motion_block_scales or {},
                        controls=controls))
    return jobs


def _entry_of_flags(model: dict, e: PromptEntry) -> dict:
    """A job given by flags as an entry of the original prompt-config schema (for config.yaml; model
    paths absolute, hub ids as given)."""
    from convert.sources import recorded  # noqa: PLC0415 - convert/ imports numpy, huggingface_hub (not --help)
    texts = [p for p in e.prompts if isinstance(p, str)]
    maps = [{int(k): v for k, v in p.items()} for p in e.prompts if not isinstance(p, str)]
    raw = dict(**({"prompt": texts} if texts else {}), **({"prompt_map": maps} if maps else {}),
               n_prompt=list(e.n_prompts))
    if model.get("motion_module"):
        raw["motion_module"] = recorded(model["motion_module"])
    if model.get("dreambooth"):
        raw["dreambooth_path"] = recorded(model["dreambooth"])
    if model.get("loras"):  # every --lora, with the rule flags use (prompt configs default to the original's)
        raw.update(lora_model_path=[recorded(p) for p, _ in model["loras"]], lora_alpha=[a for _, a in model["loras"]],
                   lora_alpha_rule="kohya")
    if model.get("motion_loras"):
        raw["motion_module_lora_configs"] = [dict(path=recorded(p), alpha=a) for p, a in model["motion_loras"]]
    if model.get("domain_adapter"):
        raw["adapter_lora_path"], raw["adapter_lora_scale"] = recorded(model["domain_adapter"][0]), \
            model["domain_adapter"][1]
    return raw


def scheduler_source(value: str) -> str | dict:
    """--scheduler-config: 'original', 'base', or a scheduler_config.json read now (errors name the file)."""
    if value in ("original", "base"):
        return value
    if os.path.isdir(value):
        raise InputError(f"--scheduler-config {value}: a directory, not a scheduler_config.json file")
    if not os.path.isfile(value):
        raise InputError(f"--scheduler-config {value}: not found (the flag takes 'original', 'base' or a "
                         "scheduler_config.json path)")
    try:
        return read_json_object(value)
    except OSError as e:
        raise InputError(f"--scheduler-config {value}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise InputError(f"--scheduler-config {value}: {e}") from None


# ----------------------------------------------------------------------------- validation

# check_video_size's subjects as the flags (and prompt-config keys) that set them
SIZE_FLAGS = {"size": "--width/--height (W/H)", "frames": "--frames (L)", "steps": "--steps",
              "context": "--context-length (context_length)"}


def context_options(o: argparse.Namespace, where: str):
    """The job's ContextOptions (unset settings: its defaults), or None without --context-length; the
    window settings given without it are ignored, with a warning."""
    from animatediff_jax.sampling.context_windows import ContextOptions  # noqa: PLC0415 - imports jax
    settings = {key: getattr(o, key) for key in CONTEXT_SETTINGS if getattr(o, key) not in (None, False)}
    if o.context_length is None:
        if settings:
            warnings.warn(f"{where}{', '.join(CONTEXT_SETTINGS[k] for k in settings)} "
                          f"({', '.join(settings)}): ignored without --context-length (no context windows)")
        return None
    given = dict(stride=o.context_stride, weighting=o.context_weighting, scope=o.context_scope,
                 shuffle_noise=False if o.no_noise_shuffle else None)
    try:
        return ContextOptions(o.context_length, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        default = "" if o.context_stride is not None else f" (--context-stride not given: {ContextOptions.stride})"
        raise UsageError(f"{where}--context-length/--context-stride (context_length/context_stride): "
                         f"{err}{default}") from None


def job_prefix(job: Job, jobs: int) -> str:
    """What starts a message about one of `jobs` jobs: the config's entry (`cfg.yaml: name: `), the
    job's name where flags made several, else nothing."""
    return f"{job.config}: {job.entry.name}: " if job.config else f"{job.entry.name}: " if jobs > 1 else ""


def file_names(job: Job) -> tuple[dict, dict]:
    """How errors name the job's files, by `loading.ModelFiles` role: (the subject of a message, what takes
    a file). A prompt-config entry's own files by the config, the entry and the key it wrote (`c.yaml:
    entry 0: dreambooth_path`; `prompt_config.model_keys`) and by that key; the rest by the flags."""
    from animatediff_jax.loading import FLAGS  # noqa: PLC0415 - imports jax (keeps --help fast)
    keys = model_keys(job.entry.raw) if job.config else {}
    labels = dict(FLAGS, **keys)
    return {role: job_prefix(job, 1) + label if role in keys else label for role, label in labels.items()}, labels


def check_scales(job: Job, names: Mapping[str, str], where: str) -> None:
    """UsageError naming the flag and the prompt-config key when a scale of `job` lies outside its
    `scale_limits` range (the flags' own values were checked as they were parsed; this sees a config's)."""
    e, m = job.entry, job.model
    scales = [(f"{where}--guidance-scale/guidance_scale", e.guidance_scale, GUIDANCE,
               " (≤ 1 samples without classifier-free guidance)"),
              (f"{where}--motion-scale/motion_scale", job.motion_scale, MOTION, " (0: no motion module)")]
    scales += [(f"{where}--motion-block-scales/motion_block_scales.{b}", f, MOTION, "")
               for b, f in job.motion_block_scales.items()]
    for role, key in (("loras", "lora_alpha"), ("motion_loras", "alpha")):
        scales += [(f"{names[role]} {path}: scale ({key})", scale, LORA, "") for path, scale in m[role]]
    if m.get("domain_adapter"):
        path, scale = m["domain_adapter"]
        scales.append((f"{names['domain_adapter']} {path}: scale (adapter_lora_scale)", scale, LORA, ""))
    nets = [c for c in job.controls if c.kind == "controlnet"]
    scales += [(f"{where}--controlnet/controlnets[{n}].conditioning_scale", c.conditioning_scale, CONDITIONING, "")
               for n, c in enumerate(nets)]
    scales += [(f"{where}--sparsectrl/controlnet_conditioning_scale", c.conditioning_scale, CONDITIONING, "")
               for c in job.controls if c.kind == "sparsectrl"]
    for what, value, limits, hint in scales:
        if (problem := scale_problem(value, limits)) is not None:
            raise UsageError(f"{what}: {problem}{hint}")


def validate(jobs: list[Job], cache_dir: str) -> frozenset:
    """Every check that can fail, for every job, before any model is built: files exist and fit
    together, sizes fit the models' geometry (from their configs), settings are consistent; the
    latents and the init video are read here (once). Returns the weight variants (None: plain) of the
    diffusers folders' weights read (for `warn_unused_variants`)."""
    import jax  # noqa: PLC0415 - sample's --help must not
    from animatediff_jax import loading  # noqa: PLC0415 - imports jax and convert/ (keeps --help fast)
    from animatediff_jax.file_roles import check_model_path  # noqa: PLC0415 - imports loading
    from animatediff_jax.models.attention import warn_unavailable  # noqa: PLC0415
    from animatediff_jax.models.unet3d import UNet3DConditionModel  # noqa: PLC0415
    from animatediff_jax.sampling.pipeline import (  # noqa: PLC0415
        check_motion_scales, check_video_size, configured_sampler, default_dtype)
    from animatediff_jax.sampling.samplers import denoising_steps  # noqa: PLC0415
    checked, videos, latents, variants = {}, {}, {}, frozenset()
    for job in jobs:
        e, s, m, o = job.entry, job.sizes, job.model, job.opts
        where = job_prefix(job, len(jobs))
        warn_unavailable(o.attention, jax.default_backend(), o.dtype or default_dtype())  # cached programs: no trace
        names, labels = file_names(job)
        check_scales(job, names, where)
        for role in ("base", "dreambooth", "motion_module", "tokenizer"):
            check_model_path(m.get(role), role, names, labels)  # one of our files given to the wrong flag or key
        for role, path in [("loras", p) for p, _ in m["loras"]] + [("motion_loras", p) for p, _ in m["motion_loras"]] \
                + ([("domain_adapter", m["domain_adapter"][0])] if m.get("domain_adapter") else []):
            check_model_path(path, role, names, labels)
        if m["motion_loras"] and not m.get("motion_module"):
            raise UsageError(f"{names['motion_loras']}: needs a motion module ({labels['motion_module']})")
        files = loading.ModelFiles(**m)
        if files not in checked:
            checked[files] = loading.check_files(files, cache_dir, names)
        job.checked = checked[files]
        variants |= job.checked.variants
        base, mm = job.checked.base.configs, job.checked.motion
        try:
            check_motion_scales(UNet3DConditionModel(base["unet"], mm.config if mm else None), job.motion_scale,
                                job.motion_block_scales)
        except UsageError as err:
            raise UsageError(f"{where}--motion-scale/--motion-block-scales (motion_scale/motion_block_scales): "
                             f"{str(err).removeprefix('motion_scale/motion_block_scales: ')}") from None
        job.context = context = context_options(o, where)
        native = base["unet"].sample_size * base["vae"].downsample_factor  # what the base was trained at
        s["width"], s["height"] = _given(s["width"], native), _given(s["height"], native)
        try:
            check_video_size(width=s["width"], height=s["height"], frames=s["frames"], steps=e.steps,
                             context=context, vae_scale=base["vae"].downsample_factor,
                             max_frames=mm.config.max_seq_length if mm else 10**9, names=SIZE_FLAGS)
        except UsageError as err:
            raise UsageError(f"{where}{err}") from None
        if job.config and o.frames is not None and (problem := travel_frame_problem(e, s["frames"])) is not None:
            raise UsageError(f"--frames {o.frames}: {job.config}: {e.name}: {problem}")  # the flag set it
        if job.config:
            check_prompt_frames(e, s["frames"], job.config)
        elif (problem := travel_frame_problem(e, s["frames"])) is not None:
            raise UsageError(f"--travel: {problem}")
        if o.strength is not None and not o.init_video:
            raise UsageError(f"{where}--strength/strength: applies only to video-to-video (give --init-video too)")
        if o.init_video and o.strength is None:
            o.strength = DEFAULT_STRENGTH  # resolved here, so config.yaml records what was used
        try:
            steps = denoising_steps(e.steps, o.strength if o.init_video else 1.0)
        except ValueError as err:
            raise UsageError(f"--strength: {err}") from None
        if job.controls:
            job.control_inputs, chosen = check_controls(
                job.controls, base_unet=base["unet"], vae_config=base["vae"], width=s["width"], height=s["height"],
                frames=s["frames"], window=s["frames"] if context is None else min(context.length, s["frames"]),
                steps=steps, joint_motion=o.diffusers_norm, batch=min(o.batch_size, len(e.prompts)), where=where,
                variant=o.variant)
            variants |= chosen
        layers = base["text_encoder"].num_hidden_layers
        if job.clip_skip >= layers:
            raise UsageError(f"{where}--clip-skip/clip_skip: must be < {layers} (the text encoder's layers), "
                             f"got {job.clip_skip}")
        sched = loading.scheduler_settings(job.scheduler_config, base["scheduler"])
        train_steps = int(sched.get("num_train_timesteps", 1000))
        if e.steps > train_steps:
            raise UsageError(f"{where}--steps/steps: must be ≤ {train_steps} (the scheduler's num_train_timesteps), "
                             f"got {e.steps}")
        try:
            configured_sampler(sched, o.scheduler or (None if "_class_name" in sched else "ddim"), e.steps, eta=o.eta)
        except ValueError as err:
            raise UsageError(f"{where}scheduler settings (--scheduler, --scheduler-config, --eta or the "
                             f"inference_config): {err}") from None
        if o.init_video:
            loading.require_exists(o.init_video, "--init-video")
            key = (o.init_video, s["frames"], s["height"], s["width"])
            if key not in videos:
                from animatediff_jax.video import fit_frames, read_frames  # noqa: PLC0415 - PIL/PyAV
                try:
                    frames = read_frames(o.init_video)
                except UserError as err:
                    raise InputError(f"--init-video {err}") from None
                videos[key] = fit_frames(frames, num_frames=s["frames"], size=(s["height"], s["width"]))
                shape = frames.shape[:3]
                if shape != videos[key].shape[:3]:
                    print(f"--init-video {o.init_video}: {'x'.join(map(str, shape))} (frames x height x width) "
                          f"resampled to {'x'.join(map(str, videos[key].shape[:3]))} (frames evenly in time, bicubic)")
                (h, w), (out_h, out_w) = shape[1:], (s["height"], s["width"])
                if abs(w * out_h - out_w * h) > 0.01 * w * out_h:  # aspects differ by over 1%
                    warnings.warn(f"--init-video {o.init_video}: its {w}x{h} frames are stretched to {out_w}x{out_h} "
                                  f"(aspect {w / h:.2f} to {out_w / out_h:.2f}, as diffusers' video-to-video does); "
                                  "crop the video to the output's aspect to keep its proportions")
            job.init_video = videos[key]
        if o.latents:
            if o.latents not in latents:
                latents[o.latents] = read_latents(o.latents)
            lat, f = latents[o.latents], base["vae"].downsample_factor
            want = (len(e.prompts), base["unet"].in_channels, s["frames"], s["height"] // f, s["width"] // f)
            if tuple(lat.shape) != want:
                raise UsageError(f"--latents {o.latents}: shape {tuple(lat.shape)}, this run needs {want} "
                                 f"(batch, channels, frames, height/{f}, width/{f})")
            job.latents = lat
    return variants


def check_memory(jobs: list[Job]) -> None:
    """UsageError naming the sizes when the run's estimated peak memory (`memory_estimate`: from the
    models' configs and the validated settings, nothing loaded) exceeds the memory available."""
    from animatediff_jax import memory_estimate as mem  # noqa: PLC0415 - imports jax
    platform = mem.current_platform()
    estimates = [job_memory(job, platform) for job in jobs]
    run = mem.combined(estimates)
    short = mem.shortfall(run, platform)
    if short is None:
        return
    need, have, what = short
    job, est = max(zip(jobs, estimates), key=lambda pair: pair[1].device)  # the job the hints are for
    s, o, chunk = job.sizes, job.opts, decode_chunk(job)
    hints = [f", use {flag}" for flag, helps in (
        ("--attention chunked", est.unet_scores + est.decode_scores > est.device / 4),
        ("--context-length 16", job.context is None and s["frames"] > 16 and est.unet >= est.decode),
        ("a smaller --decode-chunk", est.decode > est.unet and min(chunk, s["frames"]) > 1)) if helps]
    batch = f" x --batch-size {o.batch_size}" if min(o.batch_size, len(job.entry.prompts)) > 1 else ""
    raise UsageError(f"{job_prefix(job, len(jobs))}{SIZE_FLAGS['size']} {s['width']}x{s['height']} x "
                     f"{SIZE_FLAGS['frames']} {s['frames']}{batch}: needs ~{need / mem.GIB:.1f} GiB ({run.parts()}), "
                     f"{have / mem.GIB:.1f} GiB of {what} available; lower them{''.join(hints)}, or pass "
                     "--allow-over-memory to run anyway")


def decode_chunk(job: Job) -> int:
    """Frames the job's VAE decodes at once: --decode-chunk, else the pipeline's default."""
    from animatediff_jax.sampling.pipeline import DECODE_CHUNK  # noqa: PLC0415 - imports jax
    return job.opts.decode_chunk or DECODE_CHUNK


def job_memory(job: Job, platform):
    """The `memory_estimate.Estimate` of a validated job on `platform` (its models' configs and
    parameter count, its sizes and settings)."""
    from animatediff_jax import loading, memory_estimate as mem  # noqa: PLC0415 - import jax
    from animatediff_jax.sampling.pipeline import default_dtype  # noqa: PLC0415
    base, mm, s, o = job.checked.base.configs, job.checked.motion, job.sizes, job.opts
    models = mem.Models(base["unet"], mm.config if mm else None, base["vae"], base["text_encoder"],
                        loading.parameter_count(job.checked))
    return mem.estimate(models, batch=min(o.batch_size, len(job.entry.prompts)), cfg=job.entry.guidance_scale > 1,
                        frames=s["frames"], height=s["height"], width=s["width"], context=job.context,
                        decode_chunk=decode_chunk(job), dtype=o.dtype or default_dtype(),
                        attention=o.attention, platform=platform, videos=len(job.entry.prompts) + bool(o.init_video))


def read_latents(path: str) -> np.ndarray:
    """A --latents .npy file: one finite float array (no pickled objects)."""
    if not os.path.isfile(path):
        raise InputError(f"--latents {path}: {'not a file' if os.path.exists(path) else 'not found'}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PK\x03\x04":
        raise InputError(f"--latents {path}: an .npz archive; give one .npy array")
    if magic != b"\x93NUMPY":  # numpy would try it as a pickle and advise allow_pickle
        raise InputError(f"--latents {path}: not a .npy file (no NumPy array header)")
    try:
        lat = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # numpy's refusals of a file that is not a plain array
        raise InputError(f"--latents {path}: not a numeric .npy array ({e})") from None
    if not np.issubdtype(lat.dtype, np.floating):
        raise InputError(f"--latents {path}: dtype {lat.dtype}; the latents must be floating point")
    if not np.isfinite(lat).all():
        raise InputError(f"--latents {path}: holds NaN or inf")
    return lat


# ----------------------------------------------------------------------------- outputs

def write_sample(run_dir: str, idx: int, prompt, frames: np.ndarray, opts, args) -> list[str]:
    """GIF + MP4 (+ PNG frames, .npy) of one video; an OSError while writing is an OutputError."""
    from animatediff_jax import video  # noqa: PLC0415 - PIL/PyAV
    stem = os.path.join(run_dir, "sample", f"{idx}-{slug(prompt)}")
    with output_errors(stem):
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        out = [video.write_gif(stem + ".gif", frames, fps=opts.fps),
               video.write_mp4(stem + ".mp4", frames, fps=opts.fps)]
        if args.png:
            out.append(video.write_png_frames(stem, frames))
        if args.save_npy:  # the run folder as a whole is atomic: a plain write suffices
            np.save(stem + ".npy", frames.astype(np.float32))
            out.append(stem + ".npy")
    return out


@contextlib.contextmanager
def output_errors(path: str):
    """An OSError while writing outputs (disk full, read-only, name too long) -> OutputError naming the file."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"{e.filename or path}: cannot write ({write_failure(e, e.filename or path)})") from None


@contextlib.contextmanager
def memory_errors(what: str):
    """The accelerator (or host) running out of memory -> one UserError line saying what was asked and
    what to reduce, instead of XLA's dispatch traceback."""
    import jax  # noqa: PLC0415 - the pipeline has imported it by now; sample's --help must not
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e) and "Out of memory" not in str(e):
            raise
        raise UserError(f"{what}: out of memory; use smaller --width/--height/--frames/--batch-size, "
                        "a smaller --decode-chunk, or --attention chunked") from None


def saved_entry(job: Job, seeds: list[int], dtype: str) -> dict:
    """The entry to write to config.yaml: as given, with the sizes, steps, guidance, seeds actually used
    (`seed` and the original's `random_seed`) and, under `sample_options`, every other setting."""
    e = job.entry
    raw = dict(e.raw, W=job.sizes["width"], H=job.sizes["height"], L=job.sizes["frames"], steps=e.steps,
               guidance_scale=e.guidance_scale, seed=list(seeds))
    if job.clip_skip:
        raw["clip_skip"] = job.clip_skip
    for key in ("motion_scale", "motion_block_scales"):  # the values used, where not the default
        raw.pop(key, None)
    if job.motion_scale != 1.0:
        raw["motion_scale"] = job.motion_scale
    if job.motion_block_scales:
        raw["motion_block_scales"] = dict(job.motion_block_scales)
    c = job.context  # the window settings used (defaults included), when windows were on
    context = {} if c is None else dict(context_stride=c.stride, context_weighting=c.weighting,
                                        context_scope=c.scope, no_noise_shuffle=not c.shuffle_noise)
    raw["sample_options"] = options_of(job.opts, base=job.model["base"], tokenizer=job.model["tokenizer"],
                                       dtype=dtype, **context)  # the LoRAs are in the entry: lora_model_path, lora_alpha
    return raw


# ----------------------------------------------------------------------------- main

def describe_models(model: dict, controls=()) -> str:
    """The files a job samples with, on one line (`base B, motion module M, LoRA L x0.8, ControlNet C
    x1 on V`): every model a job uses is said (its `controls`, `ControlSpec`s, too), and so is the absence
    of a motion module (frame-wise images)."""
    def short(path: str) -> str:
        rel = os.path.relpath(path)
        return rel if len(rel) < len(path) else path
    parts = [f"base {short(model['base'])}"]
    if model.get("dreambooth"):
        parts.append(f"DreamBooth {short(model['dreambooth'])}")
    parts.append(f"motion module {short(model['motion_module'])}" if model.get("motion_module")
                 else "no motion module (each frame an independent image)")
    parts += [f"LoRA {short(p)} x{w:g}" for p, w in model.get("loras") or []]
    parts += [f"MotionLoRA {short(p)} x{w:g}" for p, w in model.get("motion_loras") or []]
    if model.get("domain_adapter"):
        p, w = model["domain_adapter"]
        parts.append(f"domain adapter {short(p)} x{w:g}")
    for c in controls:
        if c.kind == "controlnet":
            window = ("" if (c.control_guidance_start, c.control_guidance_end) == (0.0, 1.0)
                      else f" from {c.control_guidance_start:g} to {c.control_guidance_end:g} of the steps")
            parts.append(f"ControlNet {short(c.path)} x{c.conditioning_scale:g} on {short(c.video)}{window}")
        else:
            parts.append(f"SparseCtrl {short(c.path)} x{c.conditioning_scale:g} at frames "
                         f"{','.join(map(str, c.keyframes))}")
    return ", ".join(parts)


def load_pipeline(job: Job):
    """The job's pipeline from its checked files (weights read, fused, checked against the networks)."""
    from animatediff_jax import loading
    o = job.opts
    return loading.pipeline_from_checked(
        job.checked, scheduler=o.scheduler, scheduler_config=job.scheduler_config, dtype=o.dtype,
        attention_impl=o.attention, clip_skip=job.clip_skip, names=file_names(job)[0],
        motion_input_norm="joint" if o.diffusers_norm else "frame", decode_chunk_size=decode_chunk(job))


def load_models(job: Job):
    """The job's pipeline (`load_pipeline`) and ControlNets (`load_controls`): every weight it samples with,
    read and checked (NaN/inf, shapes) — the refusals a file can still cause after validation."""
    pipe = load_pipeline(job)
    return pipe, load_controls(job.controls, job.control_inputs, dtype=pipe.description["dtype"],
                               attention_impl=job.opts.attention, variant=job.opts.variant, where=job_prefix(job, 1))


def run(args, argv: list[str]) -> str:
    """Validate, load, sample and write; returns the run folder."""
    from animatediff_jax import video  # noqa: PLC0415 - PIL/PyAV
    from animatediff_jax.params import cache_root
    from animatediff_jax.sampling.freeinit import FreeInitOptions  # noqa: PLC0415 - imports jax
    from animatediff_jax.sampling.pipeline import enable_compilation_cache, from_diffusers_latents  # noqa: PLC0415
    from convert.sources import warn_unused_variants  # noqa: PLC0415 - huggingface_hub

    cache_dir = cache_root()
    jobs, name = jobs_from_args(args, argv)
    warn_unused_variants([job.opts.variant for job in jobs], validate(jobs, cache_dir))
    if not args.allow_over_memory:
        check_memory(jobs)
    check_writable_parent(args.out)
    enable_compilation_cache()
    first = [load_models(jobs[0])]  # a refused weights file is refused before the run folder exists
    with run_folder(args.out, name) as folder:
        print(f"sampling into {args.out}/ (the run folder appears there when every file is written)")
        with output_errors(folder.partial), open(os.path.join(folder.partial, "command.txt"), "w",
                                                 encoding="utf-8") as f:
            f.write(f"{PROG} {shlex.join(argv)}\n")  # shell-quoted: re-running it gives the same arguments
        samples, used, idx = [], [], 0
        for job in jobs:
            e, s, o = job.entry, job.sizes, job.opts
            pipe, controls = first.pop() if first else load_models(job)  # the others: one at a time, here
            seeds = draw_seeds(e.seeds)
            latents = None if job.latents is None else from_diffusers_latents(job.latents)
            freeinit = FreeInitOptions(o.freeinit_iters, o.freeinit_filter) if o.freeinit_iters > 1 else None
            print(f"{e.name}: {len(e.prompts)} video(s), {s['frames']}x{s['height']}x{s['width']}, {e.steps} steps, "
                  f"seeds {seeds}")
            print(f"  models: {describe_models(job.model, job.controls)}")
            n = o.batch_size
            for i in range(0, len(e.prompts), n):
                with memory_errors(f"{e.name}: {s['frames']}x{s['height']}x{s['width']}, batch {n}"):
                    result = pipe(e.prompts[i:i + n], e.n_prompts[i:i + n], seeds[i:i + n], width=s["width"],
                                  height=s["height"], frames=s["frames"], steps=e.steps,
                                  guidance_scale=e.guidance_scale, eta=o.eta,
                                  latents=None if latents is None else latents[i:i + n], context=job.context,
                                  freeinit=freeinit, init_video=job.init_video,
                                  strength=o.strength if job.init_video is not None else 1.0,  # 1.0: text-to-video
                                  motion_scale=job.motion_scale, motion_block_scales=job.motion_block_scales,
                                  controlnets=controls,
                                  progress=not args.no_progress)
                for prompt, frames in zip(e.prompts[i:i + n], result.frames):
                    if not np.isfinite(frames).all():
                        raise InputError(f"{e.name}: prompt {prompt!r}: the video came out NaN/inf"
                                         f"{why_nonfinite(pipe, controls)}")
                    for path in write_sample(folder.partial, idx, prompt, frames, o, args):
                        print(f"  wrote {os.path.relpath(path, folder.partial)}")
                    samples.append(frames)
                    idx += 1
            used.append((dataclasses.replace(e, raw=saved_entry(job, seeds, pipe.description["dtype"])), seeds))
        with output_errors(folder.partial):
            if len({x.shape for x in samples}) == 1:
                video.write_grid(os.path.join(folder.partial, "sample.gif"), np.stack(samples), fps=jobs[0].opts.fps)
            else:
                print("samples differ in size: no grid written")
            with open(os.path.join(folder.partial, "config.yaml"), "w", encoding="utf-8") as f:
                dump_yaml(resolved_config(used), f)
    print(f"wrote {folder.final}")
    return folder.final


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda: run(build_parser().parse_args(argv), argv) and None)


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
