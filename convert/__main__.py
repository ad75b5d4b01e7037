"""`python -m convert <command>`: convert, merge, inspect and export checkpoints (`--help` on each).

Commands come from `register(subparsers)` in `convert/commands_base.py` (base models, merging,
inspection, UNet export), `convert/commands_motion.py` (motion modules, LoRA) and
`convert/commands_controlnet.py` (ControlNets, SparseCtrl), when present. Each names its output and
inputs (`set_defaults(paths=(output dest, input dests))`, None for `inspect`), so that no command
writes over its own input (`refuse_overwriting_inputs`).
Errors a user can fix (`animatediff_jax.errors.UserError`) print one `error: <file or flag>: <problem>`
line through `run_cli` (exit 2 for a bad flag, 1 for a bad input or an unwritable output); anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import importlib.util

from animatediff_jax.errors import ArgumentParser, plain_warnings, run_cli
from animatediff_jax.interrupts import exit_cli
from animatediff_jax.outputs import refuse_input_as_output

COMMAND_MODULES = ("convert.commands_base", "convert.commands_motion", "convert.commands_controlnet")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m convert",
        description="Convert community PyTorch checkpoints (SD1.x, AnimateDiff, LoRA) to Flax params and back.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


def refuse_overwriting_inputs(args) -> None:
    """OutputError, before any work, when a command's output is one of its inputs or a folder holding
    one (`refuse_input_as_output`); `--lora PATH[:SCALE]` counts by its path."""
    if args.paths is None:
        return
    output, names = args.paths
    inputs = []
    for name in names:
        values = getattr(args, name.lstrip("-"))
        for value in values if isinstance(values, list) else [values]:
            if name == "--lora":
                from convert.lora import parse_path_scale  # numpy: not for --help
                value = parse_path_scale(value)[0]
            inputs.append((name, value))
    refuse_input_as_output((output, getattr(args, output)), inputs)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        args = build_parser().parse_args(argv)  # inside run_cli: a bad flag is one `error:` line, exit 2
        refuse_overwriting_inputs(args)
        return args.run(args)
    return run_cli(work)


if __name__ == "__main__":
    plain_warnings()
    exit_cli(main())
