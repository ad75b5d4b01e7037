"""`python -m convert <command>`: convert, merge, inspect and export checkpoints (`--help` on each).

Commands come from `register(subparsers)` in `convert/commands_base.py` (base models, merging,
inspection, UNet export) and `convert/commands_motion.py` (motion modules, LoRA), when present.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMAND_MODULES = ("convert.commands_base", "convert.commands_motion")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert community PyTorch checkpoints (SD1.x, AnimateDiff, LoRA) to Flax params and back.")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (ValueError, KeyError, OSError) as e:  # CheckpointError is a ValueError: clear message, no traceback
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
