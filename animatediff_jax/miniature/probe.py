"""Is the caption's direction visible to the motion module? A linear probe on the frozen base.

    python -m animatediff_jax.miniature.probe [--weights DIR] [--clips 192]

The motion module has no text input: a direction word can reach it only through the frozen base
UNet's spatial cross-attention, i.e. through the features at each motion module's input (the output
of the spatial transformer before it). This runs the base frame by frame on noised latents of
dataset clips whose caption direction is drawn independently of the video, mean-pools each
transformer's output over frames and pixels, and fits a ridge classifier (one-vs-rest least
squares) of the caption's direction on 3/4 of the clips; it prints the held-out accuracy per
motion-module input (chance 25%). High accuracy means the information is there for the module to
learn to use; it does not mean the module has learned to.
"""
from __future__ import annotations


from animatediff_jax.errors import ArgumentParser, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.miniature.shipped import MINIATURE
from animatediff_jax.outputs import input_path


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m animatediff_jax.miniature.probe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=input_path, default=MINIATURE, help="folder written by the miniature build (default: the shipped weights)")
    parser.add_argument("--clips", type=ArgumentParser.integer(16), default=192, help="clips to probe, 3/4 fit and 1/4 held out (default: 192)")
    def work() -> int:
        args = parser.parse_args(argv)
        # Imported after parsing: the probe pulls in JAX and the networks (seconds), --help must not.
        from animatediff_jax.miniature.direction_probe import pooled_features, probe_accuracy
        features, labels = pooled_features(args.weights, args.clips)
        print(f"| motion-module input | channels | caption-direction probe accuracy ({len(labels) // 4} held-out clips) |")
        print("|---|---|---|")
        for name, x in features.items():
            print(f"| {name} | {x.shape[1]} | {100 * probe_accuracy(x, labels):.0f}% |")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    exit_cli(main())
