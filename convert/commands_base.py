"""CLI commands for base models: `base`, `merge`, `inspect`, `export-unet` (see `python -m convert -h`).

Every command that writes refuses an existing output unless `--overwrite` (checked before any work,
see `animatediff_jax.outputs.check_output`) and writes it atomically (a folder is swapped in whole).
Converters refuse NaN/Inf tensors by name unless `--allow-nonfinite` (`animatediff_jax.nonfinite`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from animatediff_jax.errors import InputError, UsageError, UserError
from animatediff_jax.hub_ids import revision_name, variant_name
from animatediff_jax.outputs import check_output, input_path, output_path

DTYPES = ("float32", "bfloat16", "float16")
VARIANT_HELP = ("diffusers folders: the weight variant, e.g. fp16, where present (default: the plain weights, "
                "else the one variant the folder holds)")


def add_output_options(p: argparse.ArgumentParser) -> None:
    """`--overwrite` and `--allow-nonfinite` on a command that writes tensors."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="write tensors holding NaN/Inf (default: refuse, naming them)")


def json_object(text: str | None, flag: str, example: str) -> dict | None:
    """A flag's JSON-object value (None when not given); UsageError naming `flag` otherwise."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{flag}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: expected a JSON object, e.g. {example}")
    return value


def _overrides(text: str | None) -> dict | None:
    example = '{"unet": {"attention_head_dim": 8}}'
    overrides = json_object(text, "--overrides", example)
    if overrides is not None and not all(isinstance(v, dict) for v in overrides.values()):
        raise UsageError(f"--overrides: expected a JSON object of objects, e.g. {example}")
    return overrides


def refuse_converted(source: str) -> None:
    """InputError when `source` is already one of our converted files or folders (`file_roles`): a
    converted model folder is used as it is; anything else converted is not a model to convert."""
    from animatediff_jax.file_roles import MODEL_ROLES, converted_role  # imports JAX: not for --help
    from animatediff_jax.loading import FLAGS  # imports JAX too
    found = converted_role(source)
    if found is None:
        return
    what, roles = found
    if roles == MODEL_ROLES:
        raise InputError(f"{source}: already {what} (the layout `convert base` writes); nothing to convert: use it "
                         f"directly, e.g. python -m animatediff_jax.sample --base {source}")
    takes = f"sample's {' or '.join(FLAGS[r] for r in roles)} takes it" if roles else "nothing for `convert base` to do"
    raise InputError(f"{source}: {what}, already converted, not a Stable Diffusion model: {takes}")


def _base(args) -> int:
    from convert.base import convert_base, plan_base
    from convert.sources import warn_unused_variants
    overrides = _overrides(args.overrides)
    refuse_converted(args.source)
    check_output(args.out_dir, name="out_dir", overwrite=args.overwrite, folder=True)
    plan = plan_base(args.source, ema=args.ema, variant=args.variant, revision=args.revision, overrides=overrides)
    written = convert_base(args.source, args.out_dir, dtype=args.dtype, progress=not args.quiet,
                           allow_nonfinite=args.allow_nonfinite, plan=plan)
    for name, path in written.items():
        print(f"{name}: {path}")
    warn_unused_variants([args.variant], plan.variants)
    return 0


def _weights_note(weights: list[float], used: list[float]) -> str | None:
    """The one stderr line saying that `--weights` not summing to 1 were normalised to `used`; None when
    they already sum to 1."""
    if max(abs(u - w) for u, w in zip(used, weights)) <= 1e-6:
        return None
    return (f"note: --weights {' '.join(f'{w:g}' for w in weights)} do not sum to 1; merging with "
            f"{' '.join(f'{w:g}' for w in used)} (weights are normalised to sum to 1)")


def _merge(args) -> int:
    from convert.merge import merge_add_difference, merge_weighted, normalized_weights
    if args.add_difference is not None:
        if len(args.inputs) != 3:
            raise UsageError(f"--add-difference: needs exactly three inputs A B C, got {len(args.inputs)}")
        if args.weights:
            raise UsageError("--weights: not used with --add-difference")
    elif len(args.inputs) < 2:
        raise UsageError(f"inputs: a weighted sum needs at least two models, got {len(args.inputs)}")
    elif args.weights and len(args.weights) != len(args.inputs):
        raise UsageError(f"--weights: one weight per input: {len(args.inputs)} inputs, {len(args.weights)} weights")
    numbers = (args.weights or []) + ([args.add_difference] if args.add_difference is not None else [])
    if not all(math.isfinite(x) for x in numbers):
        raise UsageError(f"{'--add-difference' if args.add_difference is not None else '--weights'}: "
                         f"must be finite numbers, got {numbers}")
    if args.weights and (min(args.weights) < 0 or not any(args.weights)):
        raise UsageError(f"--weights: must be ≥ 0 and not all 0, got {args.weights} "
                         "(for A + S*(B - C) use --add-difference S)")
    check_output(args.output, name="output", overwrite=args.overwrite, suffixes=(".safetensors",))
    if args.add_difference is not None:
        merge_add_difference(*args.inputs, args.add_difference, args.output, dtype=args.dtype,
                             progress=not args.quiet, allow_nonfinite=args.allow_nonfinite)
    else:
        weights = normalized_weights(args.weights or [1.0] * len(args.inputs))
        note = args.weights and _weights_note(args.weights, weights)
        if note:
            print(note, file=sys.stderr, flush=True)
        merge_weighted(args.inputs, weights, args.output, dtype=args.dtype, progress=not args.quiet,
                       allow_nonfinite=args.allow_nonfinite)
    print(args.output)
    return 0


def _inspect(args) -> int:
    """Each given file described; a file that cannot be read is an `error:` line (with --json also an
    entry {"file", "error"} in the output) and the others go on (exit 1 at the end if any failed)."""
    from convert.detect import describe_path, read_variants
    from convert.sources import warn_unused_variants
    failed, variants = 0, frozenset()
    for path in args.files:
        try:
            infos = describe_path(path, args.variant, args.revision)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps({"file": path, "error": str(e)}), flush=True)
            failed += 1
            continue
        variants |= read_variants(infos)
        for info in infos:
            if args.json:
                print(json.dumps(info), flush=True)
                continue
            print(info["file"])
            for k, v in info.items():
                if k != "file":
                    print(f"  {k:<13}{v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"  {k:<13}{v}")
    if failed:
        return 1
    warn_unused_variants([args.variant], variants)
    return 0


def _export_unet(args) -> int:
    from convert.base import export_unet_diffusers
    check_output(args.out_dir, name="out_dir", overwrite=args.overwrite, folder=True)
    print(export_unet_diffusers(args.params, args.out_dir, dtype=args.dtype, allow_nonfinite=args.allow_nonfinite))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "base", help="SD1.x base model (diffusers folder, hub id or single file) -> Flax params",
        description="Convert an SD1.x model -- a diffusers folder (.safetensors or .bin), a hub id, or an LDM "
                    "single file (.safetensors / .ckpt, as DreamBooth models are shared) -- into "
                    "OUT_DIR/{unet,vae,text_encoder}.safetensors (Flax params, config in the metadata), "
                    "scheduler_config.json and tokenizer/ (folders only). SD2/SDXL files are refused.")
    p.add_argument("source", type=input_path, help="diffusers folder, hub id (owner/name) or .safetensors/.ckpt single file")
    p.add_argument("out_dir", type=output_path)
    p.add_argument("--ema", action="store_true", help="single files: use the EMA UNet weights (model_ema.*)")
    p.add_argument("--dtype", choices=DTYPES, help="store floating params in this dtype (default: as in the source)")
    p.add_argument("--variant", type=variant_name, help=VARIANT_HELP)
    p.add_argument("--revision", type=revision_name, help="hub revision")
    p.add_argument("--overrides", help='JSON config overrides per network, e.g. \'{"unet": {"attention_head_dim": 8}}\' '
                                       "(single files: what tensor shapes cannot tell)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_output_options(p)
    p.set_defaults(run=_base, paths=("out_dir", ("source",)))

    p = subparsers.add_parser(
        "merge", help="weighted sum of checkpoints, or add-difference A + s*(B - C)",
        description="Merge checkpoints with identical keys and shapes (Flax params files or single files of one "
                    "layout), streaming tensor by tensor. Default: weighted sum (equal weights unless --weights). "
                    "With --add-difference S: A + S*(B - C). Arithmetic in float32.")
    p.add_argument("output", type=output_path, help="output .safetensors")
    p.add_argument("inputs", type=input_path, nargs="+", help="input checkpoints")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per input (weighted sum), each ≥ 0, not all 0; normalised to sum to 1 "
                        "(0.5 0.3 merges as 0.625 0.375, said on stderr), so every tensor keeps its scale")
    p.add_argument("--add-difference", type=float, metavar="S", help="A + S*(B - C) for inputs A B C")
    p.add_argument("--dtype", choices=DTYPES, help="output dtype of floating tensors (default: as the first input)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_output_options(p)
    p.set_defaults(run=_merge, paths=("output", ("inputs",)))

    p = subparsers.add_parser(
        "inspect", help="what a checkpoint file is: format, kind, model family, version, parameters, dtypes",
        description="Describe checkpoint files without loading their tensors: file format, kind (LDM single file, "
                    "diffusers UNet/VAE, CLIP, motion module, LoRA, Flax params...), model family (SD1.x/SD2/"
                    "SDXL; Flax params by the network they hold), motion-module version, parameter count and "
                    "dtypes; for a folder, its layout too; for an output of `merge`, what it was merged from.")
    p.add_argument("files", type=input_path, nargs="+", help="checkpoint files, model folders or hub ids of them (owner/name, "
                                             "found through the Hugging Face cache as `base` finds them; each "
                                             "weights file described): diffusers SD folders (weights whole or "
                                             "sharded, plain or a variant such as fp16), folders written by "
                                             "`convert base`, diffusers MotionAdapter / ControlNet / SparseCtrl "
                                             "folders, PEFT LoRA adapters; an unreadable one is reported and the "
                                             "others still described (exit 1)")
    p.add_argument("--variant", type=variant_name, help=VARIANT_HELP)
    p.add_argument("--revision", type=revision_name, help="hub ids: the revision (branch, tag or commit)")
    p.add_argument("--json", action="store_true", help="one JSON object per file (an unreadable one: "
                                                           '{"file": ..., "error": ...})')
    p.set_defaults(run=_inspect, paths=None)

    p = subparsers.add_parser(
        "export-unet", help="Flax UNet params -> diffusers UNet2DConditionModel folder",
        description="Write a stored Flax UNet (e.g. OUT_DIR/unet.safetensors from `base`) as a diffusers "
                    "UNet2DConditionModel folder (config.json + diffusion_pytorch_model.safetensors) that "
                    "UNet2DConditionModel.from_pretrained loads. Motion modules are not included.")
    p.add_argument("params", type=input_path, help="Flax UNet params .safetensors")
    p.add_argument("out_dir", type=output_path)
    p.add_argument("--dtype", choices=DTYPES, help="output dtype (default: as stored)")
    add_output_options(p)
    p.set_defaults(run=_export_unet, paths=("out_dir", ("params",)))
