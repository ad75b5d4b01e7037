"""Regenerate every weight of the miniature AnimateDiff from scratch (fixed seeds), timing each stage.

    python -m animatediff_jax.miniature.build                                  # full, into ./miniature-build
    python -m animatediff_jax.miniature.build --out /tmp/mini --budget smoke   # every stage at toy sizes, minutes
    python -m animatediff_jax.miniature.build --out DIR --stages motion        # one stage (reads the others)
    python -m animatediff_jax.miniature.build --overwrite-shipped              # replace the package's weights

Stages, in order (each reads what the earlier ones wrote under --out):
  tokenizer   word-level CLIP tokenizer for the caption vocabulary        base/tokenizer/
  vae         AutoencoderKL on images of every style (the object's pixels weighted 4x), then its
              decoder alone                                               base/vae.safetensors
  text        CLIP text encoder (2 layers, width 64), pre-trained contrastively against clips and
              images of every domain, then frozen                         base/text_encoder.safetensors
  base        the base text-to-image UNet, trained from scratch on single frames of plain clips,
              captioned with ("a red circle moving left") or without the motion words, schedule A (SD's)
                                                                          base/unet.safetensors
  dreambooth  full fine-tune of the base UNet on single frames of clips on "stripes", trigger "sks",
              captioned like the base's data (no videos)                  dreambooth/*.safetensors
  decoder     the VAE's decoder again, on the base UNet's one-step denoised latents of plain frames
              (and the four styles' own latents); the encoder stays, the
              DreamBooth keeps the VAE it was trained with               base/vae.safetensors
  lora        rank-16 LoRA on the base's attention and feed-forward layers, single frames of clips on
              "checker", trigger "xyz" (no videos), kohya format          lora_checker.safetensors
  motion      motion modules trained on plain clips against the frozen base, one per noise schedule
              (B, the paper's; A and C, its ablation, on request)         motion_module_{B,A,C}.safetensors
  motion_lora rank-8 MotionLoRA on motion module B's attention, trained on clips that all move
              right (the module and the base frozen), original format     motion_lora_right.safetensors
`build.json` records the budget, seeds, seconds and final loss of every stage. The full budget takes
about 3 hours on a 2-core CPU (~90 min for the image stages, partly beside other jobs; ~80 min for
the 12000 steps of motion module B at ~0.40 s each; ~8 min for the MotionLoRA; README).
"""
from __future__ import annotations

import argparse
import os
import time

from animatediff_jax.errors import ArgumentParser, InputError, OutputError, UsageError, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.miniature.budget import BUDGETS, READS, STAGES, WRITES
from animatediff_jax.miniature.shipped import MINIATURE, paths, read_record
from animatediff_jax.outputs import output_path
from animatediff_jax.run_folder import check_writable_parent

DEFAULT_OUT = "miniature-build"
SHIPPED_SUFFIX = os.path.join("animatediff_jax", "assets", "miniature")  # in any checkout or install


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m animatediff_jax.miniature.build",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, type=output_path,
                        help=f"output folder (default: ./{DEFAULT_OUT}; never a package's shipped weights "
                             "without --overwrite-shipped, nor a folder holding a build without --stages)")
    parser.add_argument("--overwrite-shipped", action="store_true",
                        help=f"allow --out to be a package's shipped weights (a folder ending in {SHIPPED_SUFFIX}, "
                             f"e.g. {MINIATURE})")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full",
                        help="full: the shipped weights' steps and widths (~3 h on 2 cores); smoke: every stage at "
                             "toy sizes, minutes, meaningless weights (default: full)")
    parser.add_argument("--stages", help="comma-separated subset of the stages (default: all); needed to "
                                         "continue a build in an --out that holds one (build.json)")
    parser.add_argument("--schedules", help="motion-module noise schedules to train, e.g. B or B,A,C "
                                            "(default: the budget's)")
    parser.add_argument("--motion-steps", type=ArgumentParser.integer(1), help="motion-module training steps, every schedule "
                                                         "(default: the budget's, per schedule)")
    parser.add_argument("--motion-lr", type=ArgumentParser.number(above=0), help="motion-module peak learning rate, every schedule "
                                                        "(default: the budget's, per schedule)")
    parser.add_argument("--motion-checkpoint-every", type=ArgumentParser.integer(0), default=0,
                        help="every N steps write motion_module_<S>.step<N>.safetensors and the training state "
                             "(motion_module_<S>.resume.msgpack): a stopped build run again with the same "
                             "flags continues from there (default: 0, never)")
    return parser


def names(flag: str, text: str, allowed) -> list[str]:
    """The comma-separated names of `flag`'s value `text`; UsageError naming the flag when there is none, one
    is not in `allowed`, or one is given twice."""
    given = [s.strip() for s in text.split(",") if s.strip()]
    if not given or not set(given) <= set(allowed):
        raise UsageError(f"{flag} {text!r}: give comma-separated names, each one of {','.join(allowed)}")
    if len(set(given)) < len(given):
        raise UsageError(f"{flag} {text!r}: names a value twice")
    return given


def check_inputs(out: str, stages: list[str]) -> None:
    """Every file the chosen stages read is under `out` or written by an earlier chosen stage (`READS`);
    else InputError naming the first stage lacking some, those files and the stages that write them."""
    for stage in (s for s in STAGES if s in stages):
        # READS names earlier stages only: one chosen too runs first
        missing = [need for need in READS[stage] if need not in stages and not os.path.exists(paths(out)[need])]
        if missing:
            one = len(missing) == 1
            raise InputError(f"--stages {stage}: needs {', '.join(paths(out)[need] for need in missing)}, which the "
                             f"{', '.join(missing)} {'stage writes' if one else 'stages write'}; add "
                             f"{'it' if one else 'them'} to --stages or choose the --out of a build that has "
                             f"{'it' if one else 'them'}")


def checked_args(args) -> tuple[list[str], list[str] | None]:
    """(stages, schedules) from the flags; UsageError naming the flag for a bad value, then OutputError for
    an --out that may not be written (`check_out`), InputError for a stage's missing input (`check_inputs`)."""
    stages = names("--stages", args.stages, STAGES) if args.stages is not None else list(STAGES)
    schedules = names("--schedules", args.schedules, "ABC") if args.schedules is not None else None
    if "motion" not in stages:
        given = [flag for flag, value in (("--schedules", args.schedules), ("--motion-steps", args.motion_steps),
                                          ("--motion-lr", args.motion_lr)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: for the motion stage, which --stages {args.stages} leaves out")
    check_out(args)
    check_inputs(args.out, stages)
    check_writable_folders(args.out, stages)
    return stages, schedules


def check_writable_folders(out: str, stages: list[str]) -> None:
    """Every folder the chosen stages write into (`WRITES`) is writable or can be created, and no file
    they write is a folder: OutputError naming it before any stage trains (not after, when its file is
    saved)."""
    p = paths(out)
    for key in sorted({key for stage in stages for key in WRITES[stage]}):
        is_folder = key in ("tokenizer", "dreambooth")
        if not is_folder and os.path.isdir(p[key]):
            raise OutputError(f"{p[key]}: is a folder where the {key} file is to be written; move it away")
        check_writable_parent(p[key] if is_folder else os.path.dirname(p[key]))


def check_out(args) -> None:
    """--out may be written: not shipped weights (without --overwrite-shipped), a writable folder, and
    not holding a build unless --stages continues it or a --motion-checkpoint-every run resumes one.
    OutputError naming --out (UsageError for a file given as --out)."""
    if os.path.realpath(args.out).endswith(os.sep + SHIPPED_SUFFIX) and not args.overwrite_shipped:
        raise OutputError(f"--out {args.out}: a package's shipped weights; pass --overwrite-shipped to replace them")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    check_writable_parent(args.out)
    if args.stages is not None or not os.path.isfile(os.path.join(args.out, "build.json")):
        return
    if args.motion_checkpoint_every and any(name.endswith(".resume.msgpack") for name in os.listdir(args.out)):
        return
    done = [s for s in STAGES if s in read_record(args.out)]
    left = [s for s in STAGES if s not in done]
    hint = f"--stages {','.join(left)} to continue it (stages not in its build.json), " if left else ""
    raise OutputError(f"--out {args.out}: already holds a build (build.json records {','.join(done) or 'no stage'}); "
                      f"pass {hint}--stages NAMES to rebuild stages of it, or choose another --out")


def main(argv=None) -> int:
    def work() -> int:
        args = build_parser().parse_args(argv)
        stages, schedules = checked_args(args)
        # Imported after parsing: the stages pull in JAX and the networks (seconds), --help must not.
        from animatediff_jax.miniature.stages import build
        start = time.time()
        record = build(args.out, args.budget, stages, schedules, args.motion_steps, args.motion_lr,
                       args.motion_checkpoint_every)
        print("stage seconds (as build.json records them: a resumed stage's include the runs it resumed): "
              + ", ".join(f"{s} {record[s]['seconds']:.0f}" for s in STAGES if s in stages)
              + f"; this run {time.time() - start:.0f}s", flush=True)
        return 0

    return run_cli(work)


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
