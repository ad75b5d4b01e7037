"""CLI commands for motion modules and LoRA: `motion`, `lora`, `motion-lora`, `export-motion`,
`export-motion-lora`.

    python -m convert motion mm_sd_v15_v2.ckpt mm_v2.safetensors
    python -m convert lora base_out/ styled/ --lora toon.safetensors:0.8 --lora v3_sd15_adapter.ckpt
    python -m convert motion-lora mm_v2.safetensors mm_zoom.safetensors --lora v2_lora_ZoomIn.ckpt:0.8
    python -m convert export-motion mm_trained.safetensors mm_trained.ckpt          # original format
    python -m convert export-motion mm_trained.safetensors adapter_dir/ --format diffusers
    python -m convert export-motion-lora motion_lora_factors.safetensors v2_lora_Mine.ckpt --alpha 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from animatediff_jax.errors import ArgumentParser, InputError, UsageError
from animatediff_jax.hub_ids import revision_name, variant_name
from animatediff_jax.nonfinite import NonFinite
from animatediff_jax.outputs import atomic_folder, check_output, input_path, output_path
from animatediff_jax.path_scale import split_path_scale
from animatediff_jax.scale_limits import LORA
from convert.commands_base import DTYPES, VARIANT_HELP, add_output_options

PARAMS_FILES = ("unet", "text_encoder")  # what LoRAs change in a converted base folder


positive_int = ArgumentParser.integer(1)  # argparse type: heads, groups, sequence lengths


def lora_value(text: str) -> str:
    """argparse `type=` of `--lora PATH[:SCALE]`: refuses an empty PATH and a SCALE outside
    `scale_limits.LORA` (as `sample --lora`), before any file is read."""
    path, scale = split_path_scale(text)
    if not path:
        raise argparse.ArgumentTypeError(f"{text!r}: empty path" if text else "empty path")
    if scale is not None:
        try:
            ArgumentParser.number(*LORA)(scale)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: scale {e}") from None
    return text


def _motion_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", type=positive_int, help="attention heads (not stored in original files; default 8)")
    p.add_argument("--norm-groups", type=positive_int, help="GroupNorm groups (not stored in original files; default 32)")
    p.add_argument("--max-seq-length", type=positive_int,
                   help="position-encoding length (default: read from the file's pos_encoder.pe shape, "
                        "else the version's: 24 for v1, 32 for v2/v3); one other than the file's overrides it, "
                        "with a warning")
    p.add_argument("--version", choices=("v1", "v2", "v3"),
                   help="v1 (joint resnet GroupNorm), v2 (mid block) or v3; required for a file without "
                        "pos_encoder.pe (the original trainer's checkpoints), else overrides the detected one "
                        "(with a warning; one contradicting the file's mid block is refused)")
    p.add_argument("--replace-pe", action="store_true",
                   help="accept a stored pos_encoder.pe that is not the standard sinusoid (a trained or stretched "
                        "position encoding), converting the module with the sinusoid in its place: it then behaves "
                        "differently than in the original AnimateDiff and diffusers, which load the stored one "
                        "(without this flag such a file is refused)")
    p.add_argument("--variant", type=variant_name, help=VARIANT_HELP)
    p.add_argument("--revision", type=revision_name, help="hub ids: the revision (branch, tag or commit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


# the flags that give what an original file does not store; converted params carry it in their config
_CONFIG_FLAGS = {"--heads": "heads", "--norm-groups": "norm_groups", "--max-seq-length": "max_seq_length"}


def load_motion(path: str, args=None):
    """`MotionModule` of a converted Flax motion file or of any motion-module source (a hub id of a
    MotionAdapter repo too: `convert.motion.load_motion_module`)."""
    from animatediff_jax.checkpoint import load_config, load_params, read_metadata
    from convert.motion import load_motion_module, motion_module_from_params, resolve_version
    if path.endswith(".safetensors") and os.path.isfile(path) and read_metadata(path).get("format") == "flax":
        params, meta = load_params(path)
        config = load_config(meta)
        if type(config).__name__ != "MotionConfig":
            raise InputError(f"{path}: holds {meta.get('config_class', 'no config')}, not motion-module params")
        given = [flag for flag, dest in _CONFIG_FLAGS.items() if getattr(args, dest, None) is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: not used: {path} holds converted motion params whose config sets "
                             f"them (heads {config.num_attention_heads}, norm groups {config.norm_num_groups}, "
                             f"max_seq_length {config.max_seq_length})")
        if getattr(args, "replace_pe", False):
            raise UsageError(f"--replace-pe: not used: {path} holds converted motion params, which store no "
                             "position encoding")
        version, stored = getattr(args, "version", None), json.loads(meta.get("motion", "{}")).get("version", "")
        if version is not None:  # the check a motion-module file gets: a given version must fit the mid block
            resolve_version(version, config.use_mid_block, None, path)
            if stored and version != stored:
                raise UsageError(f"--version {version}: not used: {path} holds converted {stored} motion params")
        return motion_module_from_params(params, config, stored)
    return load_motion_module(path, heads=getattr(args, "heads", None), norm_num_groups=getattr(args, "norm_groups", None),
                              max_seq_length=getattr(args, "max_seq_length", None), version=getattr(args, "version", None),
                              variant=getattr(args, "variant", None), revision=getattr(args, "revision", None),
                              progress=not getattr(args, "quiet", True), replace_pe=getattr(args, "replace_pe", False))


def warn_assumed(source: str, mm) -> None:
    """One stderr line when `mm` (read from `source`) has heads or groups that neither a flag nor the file
    stated (`convert.motion.assumed_message`), naming the values assumed and this command's flags."""
    from convert.motion import assumed_message
    said = assumed_message(source, mm, {"num_attention_heads": "--heads", "norm_num_groups": "--norm-groups"})
    if said:
        print(f"warning: {said}", file=sys.stderr)


def _save_motion(path: str, mm, origin: str, source: str, args) -> None:
    """Motion params to `path`; `origin` (the input as given) is named if tensors hold NaN/Inf."""
    from animatediff_jax.checkpoint import save_params
    from convert.motion import motion_metadata
    save_params(path, mm.params, config=mm.config, source=source, dtype=args.dtype, metadata=motion_metadata(mm),
                nonfinite=NonFinite(origin, allow=args.allow_nonfinite))


def _motion(args) -> int:
    from convert.sources import recorded, warn_unused_variants
    check_output(args.output, name="output", overwrite=args.overwrite, suffixes=(".safetensors",))
    mm = load_motion(args.source, args)
    warn_assumed(args.source, mm)
    _save_motion(args.output, mm, args.source, f"motion:{recorded(args.source)}", args)
    print(f"{args.output}: motion module {mm.version}, max_seq_length {mm.config.max_seq_length}, "
          f"mid block {mm.config.use_mid_block}, heads {mm.config.num_attention_heads}")
    warn_unused_variants([args.variant], mm.variants)
    return 0


def _lora_args(values) -> list[tuple[str, str, float]]:
    """`--lora PATH[:SCALE]` values as (path as given, local path, scale). A hub id (a LoRA repo: PEFT
    adapter, diffusers' pytorch_lora_weights.*, one diffusion_pytorch_model.*) is found in, or
    downloaded into, the Hugging Face cache as `sample --lora` finds one (`HUB_PATTERNS["lora"]`)."""
    from convert.lora import parse_path_scale
    from convert.sources import HUB_PATTERNS, resolve_source
    return [(path, resolve_source(path, allow_patterns=HUB_PATTERNS["lora"]), scale)
            for path, scale in map(parse_path_scale, values)]


# what `lora` fuses into, by its file: the config class stored by `convert base`, and its name
_NETWORK_CONFIGS = {"unet": ("UNetConfig", "UNet"), "text_encoder": ("CLIPTextConfig", "text encoder")}


def _require_network(path: str, network: str) -> None:
    """InputError unless `path` holds converted `network` params ('unet' or 'text_encoder'), saying what
    it holds instead (a motion module, a VAE, a PyTorch file...). Flax params without a stored config
    pass: which network they are is then for the LoRA's targets to tell."""
    from animatediff_jax.checkpoint import read_metadata
    from animatediff_jax.file_roles import converted_role
    if not os.path.isfile(path):
        raise InputError(f"{path}: not found")
    meta = read_metadata(path)  # names the file when it is no safetensors file at all
    config_class, name = _NETWORK_CONFIGS[network]
    if meta.get("config_class") == config_class or meta.get("format") == "flax" and "config_class" not in meta:
        return
    found = converted_role(path)
    what = found[0] if found else "not a file written by `python -m convert`"
    raise InputError(f"{path}: {what}, not a converted {name}; BASE is a folder written by `python -m convert "
                     "base`, or the unet.safetensors in one")


def _lora(args) -> int:
    from animatediff_jax.checkpoint import load_config, load_params, save_params
    from convert.lora import apply_lora_files
    folder = os.path.isdir(args.base)
    check_output(args.output, name="output", overwrite=args.overwrite, folder=folder,
                 suffixes=(".safetensors",) if os.path.isfile(args.base) else None)  # a missing base: said next
    loras = _lora_args(args.lora)
    if folder:
        files = {c: os.path.join(args.base, f"{c}.safetensors") for c in PARAMS_FILES}
        files = {c: f for c, f in files.items() if os.path.isfile(f)}
        if "unet" not in files:
            raise InputError(f"{args.base}: no unet.safetensors (convert the base with `python -m convert base`)")
    else:
        files = {"unet": args.base}
    for c, f in files.items():  # before any LoRA is read: a wrong base is named as such, not the LoRA blamed
        _require_network(f, c)
    loaded = {c: load_params(f) for c, f in files.items()}
    fused = apply_lora_files({c: p for c, (p, _) in loaded.items()}, [(local, s) for _, local, s in loras],
                             skip_other=not folder, allow_nonfinite=args.allow_nonfinite)
    # each LoRA by its file's name, a hub id as given
    names = json.dumps([[p if p != local else os.path.basename(p), s] for p, local, s in loras])

    def save(c: str, out: str) -> None:
        meta = loaded[c][1]
        save_params(out, fused[c], config=load_config(meta, files[c]), source=meta.get("source"), dtype=args.dtype,
                    metadata={"loras": names}, nonfinite=NonFinite(f"{files[c]} + LoRAs", allow=args.allow_nonfinite),
                    progress=None if args.quiet else f"writing {c}")

    if not folder:
        save("unet", args.output)
        print(args.output)
        return 0
    with atomic_folder(args.output) as tmp:  # the whole folder: fused networks + the rest copied
        for c in files:
            save(c, os.path.join(tmp, f"{c}.safetensors"))
        for name in sorted(os.listdir(args.base)):  # vae, scheduler, tokenizer: unchanged
            src, dst = os.path.join(args.base, name), os.path.join(tmp, name)
            if name not in {f"{c}.safetensors" for c in files} and not name.startswith("."):
                (shutil.copytree(src, dst) if os.path.isdir(src) else shutil.copy2(src, dst))
    for c in files:
        print(os.path.join(args.output, f"{c}.safetensors"))
    return 0


def _motion_lora(args) -> int:
    from convert.lora import fuse_motion_loras
    from convert.sources import recorded, warn_unused_variants
    from dataclasses import replace
    check_output(args.output, name="output", overwrite=args.overwrite, suffixes=(".safetensors",))
    loras = _lora_args(args.lora)
    mm = load_motion(args.motion, args)
    warn_assumed(args.motion, mm)
    fused = replace(mm, params=fuse_motion_loras(mm.params, [(local, s) for _, local, s in loras],
                                                 allow_nonfinite=args.allow_nonfinite))
    _save_motion(args.output, fused, f"{args.motion} + MotionLoRAs",
                 f"motion:{recorded(args.motion)}+motion-lora", args)
    print(args.output)
    warn_unused_variants([args.variant], mm.variants)
    return 0


def _export_motion(args) -> int:
    import numpy as np
    from convert.export import ORIGINAL_SUFFIXES, export_adapter, export_original, require_torch
    from convert.sources import warn_unused_variants
    fmt = args.format or ("original" if args.output.endswith(ORIGINAL_SUFFIXES) else "diffusers")
    check_output(args.output, name="output", overwrite=args.overwrite, folder=fmt == "diffusers",
                 suffixes=ORIGINAL_SUFFIXES)
    if fmt == "original":
        require_torch(args.output)
    mm = load_motion(args.params, args)
    if fmt == "diffusers" or args.output.endswith(".safetensors"):  # a pickle records neither: the guess goes nowhere
        warn_assumed(args.params, mm)
    params, config = mm.params, mm.config
    dtype = np.float16 if args.dtype == "float16" else np.float32
    nonfinite = NonFinite(args.params, allow=args.allow_nonfinite)
    export = export_original if fmt == "original" else export_adapter
    export(params, config, args.output, dtype=dtype, nonfinite=nonfinite)
    print(args.output)
    warn_unused_variants([args.variant], mm.variants)
    return 0


def _export_motion_lora(args) -> int:
    import numpy as np
    from animatediff_jax.params import is_motion_path
    from convert.export import ORIGINAL_SUFFIXES, export_motion_lora, require_torch
    from convert.lora import read_factors
    check_output(args.output, name="output", overwrite=args.overwrite, suffixes=ORIGINAL_SUFFIXES)
    require_torch(args.output)
    lora = read_factors(args.factors, args.alpha, allow_nonfinite=args.allow_nonfinite)
    other = [p for p in lora if not is_motion_path(p)]
    if other:
        raise InputError(f"{args.factors}: {len(other)} factors are not on motion modules (e.g. "
                         f"{'/'.join(other[0])}); a MotionLoRA holds motion-module factors only")
    source = args.factors if args.alpha is None else f"{args.factors} at --alpha {args.alpha:g}"
    export_motion_lora(lora, args.output, dtype=np.float16 if args.dtype == "float16" else np.float32,
                       style=args.format, nonfinite=NonFinite(source, allow=args.allow_nonfinite))
    print(f"{args.output}: MotionLoRA ({args.format} format), {len(lora)} projections, "
          f"rank {max(w.rank for w in lora.values())}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "motion", help="AnimateDiff motion module (original v1/v2/v3 file, MotionAdapter folder or hub id) -> "
                       "Flax params",
        description="Convert an AnimateDiff motion module -- an original file (mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt, "
                    ".safetensors re-saves, with or without the 'state_dict' wrapper or 'module.' prefix), a "
                    "diffusers MotionAdapter folder (weights whole or sharded, plain or a variant such as fp16) "
                    "or the hub id of one (e.g. guoyww/animatediff-motion-adapter-v1-5-2, found through the "
                    "Hugging Face cache, offline too) -- into Flax params (.safetensors, MotionConfig in the "
                    "metadata). The version and config are read from the keys and shapes; SDXL modules are refused.")
    p.add_argument("source", type=input_path, help="motion-module file, MotionAdapter folder or its hub id (owner/name)")
    p.add_argument("output", type=output_path, help="output .safetensors (Flax params)")
    _motion_options(p)
    p.add_argument("--dtype", choices=DTYPES, help="store floating params in this dtype (default float32)")
    add_output_options(p)
    p.set_defaults(run=_motion, paths=("output", ("source",)))

    p = subparsers.add_parser(
        "lora", help="fuse LoRAs (kohya/A1111, diffusers/PEFT, v3 domain adapter) into a converted base",
        description="Fuse one or more LoRAs into Flax params: W += scale * (alpha/rank) * up @ down. BASE is a "
                    "folder written by `python -m convert base` (UNet and text encoder are fused, the rest copied "
                    "to OUTPUT) or a single UNet params file (text-encoder weights of the LoRA are then skipped).")
    p.add_argument("base", type=input_path, help="converted base folder, or a UNet params .safetensors")
    p.add_argument("output", type=output_path, help="output folder (or .safetensors when BASE is a file)")
    p.add_argument("--lora", action="append", required=True, type=lora_value, metavar="PATH[:SCALE]",
                   help="LoRA file, folder or hub id and its scale (default 1.0); repeat for several")
    p.add_argument("--dtype", choices=DTYPES, help="store floating params in this dtype (default: as the base)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_output_options(p)
    p.set_defaults(run=_lora, paths=("output", ("base", "--lora")))

    p = subparsers.add_parser(
        "motion-lora", help="fuse MotionLoRAs (v2 camera motions) into a motion module",
        description="Fuse MotionLoRAs (original processor.*_lora files or the diffusers format) into a v2 motion "
                    "module at their alphas: W += alpha * up @ down. MOTION is converted Flax motion params or "
                    "any motion-module source `motion` accepts.")
    p.add_argument("motion", type=input_path, help="motion params .safetensors, original file, MotionAdapter folder or its hub id")
    p.add_argument("output", type=output_path, help="output .safetensors (Flax params)")
    p.add_argument("--lora", action="append", required=True, type=lora_value, metavar="PATH[:ALPHA]",
                   help="MotionLoRA file, folder or hub id and its alpha (default 1.0); repeat to combine several")
    _motion_options(p)
    p.add_argument("--dtype", choices=DTYPES, help="store floating params in this dtype (default float32)")
    add_output_options(p)
    p.set_defaults(run=_motion_lora, paths=("output", ("motion", "--lora")))

    p = subparsers.add_parser(
        "export-motion", help="Flax motion params -> original AnimateDiff file or diffusers MotionAdapter folder",
        description="Export motion params to the original AnimateDiff format (.ckpt or .safetensors; loads in "
                    "the original code, ComfyUI and MotionAdapter.from_single_file) or to a diffusers "
                    "MotionAdapter folder (config.json + diffusion_pytorch_model.safetensors).")
    p.add_argument("params", type=input_path, help="motion params .safetensors (or any motion-module source)")
    p.add_argument("output", type=output_path, help=".ckpt/.safetensors file (original) or a folder (diffusers)")
    p.add_argument("--format", choices=("original", "diffusers"),
                   help="default: original for a .ckpt/.pt/.pth/.safetensors OUTPUT, else diffusers")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="tensor dtype written")
    _motion_options(p)
    add_output_options(p)
    p.set_defaults(run=_export_motion, paths=("output", ("params",)))

    p = subparsers.add_parser(
        "export-motion-lora", help="Flax MotionLoRA factors -> original AnimateDiff or diffusers MotionLoRA file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Export MotionLoRA factors trained here to a MotionLoRA file the community loads.

FACTORS is a Flax params .safetensors (animatediff_jax.checkpoint.save_params) of the training
code's LoRA-factor layout (animatediff_jax/training/lora.py, miniature/lora.py):

    {"lora": {"down_blocks_0.motion_modules_0.transformer_blocks_0.attn1.to_q.kernel":
              {"down": (r, in), "up": (out, r)}, ...}}

i.e. file keys 'lora/<dotted Flax kernel path>/down' and '.../up' (the 'lora/' level is optional;
an optional scalar '.../alpha' leaf sets one factor's alpha). Only motion-module attention
projections (attn1/attn2 to_q, to_k, to_v, to_out.0) are allowed. The update is
W += (alpha / r) * up @ down; neither output format stores alpha, so alpha / r is folded into 'up'.

--format original: AnimateDiff's keys (down_blocks.0.motion_modules.0.temporal_transformer.
  transformer_blocks.0.attention_blocks.0.processor.to_q_lora.down.weight), as v2_lora_*.ckpt;
  loads in the original code and in `python -m convert motion-lora`.
--format diffusers: 'unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor.
  to_q_lora.down.weight', as the hub's diffusers MotionLoRAs; loads with
  AnimateDiffPipeline.load_lora_weights.""")
    p.add_argument("factors", type=input_path, help="Flax LoRA-factors .safetensors (layout above)")
    p.add_argument("output", type=output_path, help="output .ckpt/.pt/.pth (torch pickle) or .safetensors")
    p.add_argument("--format", choices=("original", "diffusers"), default="original",
                   help="key naming (default original)")
    p.add_argument("--alpha", type=ArgumentParser.number(above=0),
                   help="LoRA alpha of the factors (default: the file's 'alpha' metadata, else the rank: scale 1)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="tensor dtype written")
    add_output_options(p)
    p.set_defaults(run=_export_motion_lora, paths=("output", ("factors",)))
