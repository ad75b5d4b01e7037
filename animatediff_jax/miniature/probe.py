"""Is the caption's direction visible to the motion module, and does the module use it?

    python -m animatediff_jax.miniature.probe [--weights DIR] [--clips 192] [--schedule B] [--module-clips 64]

The motion module has no text input: a direction word can reach it only through the frozen base
UNet's spatial cross-attention, i.e. through the features at each motion module's input (the output
of the spatial transformer before it). This runs the base frame by frame on noised latents of
dataset clips whose caption direction is drawn independently of the video, mean-pools each
transformer's output over frames and pixels, and fits a ridge classifier (one-vs-rest least
squares) of the caption's direction on 3/4 of the clips; it prints the held-out accuracy per
motion-module input (chance 25%). High accuracy means the information is there for the module to
learn to use; it does not mean the module has learned to.

Whether it has is the second table: base + the motion module denoise dataset clips noised to each of
DDIM sampling's first timesteps, once with each clip's caption, once with its direction word replaced
by the opposite one, once with the empty caption, and the error of the predicted clean latents is
printed for each (`direction_probe.caption_dependence`). If the opposite direction costs no more than
the right one where sampling settles the layout, the module does not draw the captioned direction.
"""
from __future__ import annotations

import os

from animatediff_jax.errors import ArgumentParser, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.miniature.shipped import MINIATURE, check_build, motion_path
from animatediff_jax.outputs import input_path


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m animatediff_jax.miniature.probe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=input_path, default=MINIATURE, help="folder written by the miniature build (default: the shipped weights)")
    parser.add_argument("--clips", type=ArgumentParser.integer(16, 4096), default=192, help="clips to probe, 3/4 fit and 1/4 held out (default: 192)")
    parser.add_argument("--schedule", choices=("A", "B", "C"), default="B",
                        help="the motion module whose use of the caption is measured: motion_module_<S> in --weights "
                             "(default: B, the shipped one; a folder without it gets the probe alone)")
    parser.add_argument("--module-clips", type=ArgumentParser.integer(1, 4096), default=64,
                        help="clips the module denoises per timestep and caption (default: 64)")
    def work() -> int:
        args = parser.parse_args(argv)
        # Imported after parsing: the probe pulls in JAX and the networks (seconds), --help must not.
        from animatediff_jax.miniature import stages
        from animatediff_jax.miniature.direction_probe import (CAPTIONS, caption_dependence, pooled_features,
                                                               probe_accuracy)
        check_build(args.weights)
        module = motion_path(args.weights, args.schedule)
        if os.path.exists(module):
            stages.load(module, "motion")  # a damaged or wrong file: one line before any work
        features, labels = pooled_features(args.weights, args.clips)
        print(f"| motion-module input | channels | caption-direction probe accuracy ({len(labels) // 4} held-out clips) |")
        print("|---|---|---|")
        for name, x in features.items():
            print(f"| {name} | {x.shape[1]} | {100 * probe_accuracy(x, labels):.0f}% |")
        if not os.path.exists(module):
            print(f"\n{module}: not found; the module's use of the caption is not measured "
                  f"(the build's motion stage with --schedules {args.schedule} writes it)")
            return 0
        errors = caption_dependence(args.weights, args.schedule, args.module_clips)
        print(f"\nbase + {os.path.basename(module)}: error of the predicted clean latents (MSE) on "
              f"{args.module_clips} clips, by caption (in brackets: vs the clip's own caption)")
        print("| t | " + " | ".join(CAPTIONS) + " |")
        print("|---" * (len(CAPTIONS) + 1) + "|")
        for t, row in errors.items():
            own = row[CAPTIONS[0]]
            print(f"| {t} | {own:.4f} | " + " | ".join(
                f"{row[c]:.4f} ({100 * (row[c] / own - 1):+.1f}%)" for c in CAPTIONS[1:]) + " |")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
