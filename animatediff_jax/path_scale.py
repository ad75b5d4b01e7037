"""`PATH[:SCALE]` command-line values (`--lora`, `--motion-lora`, convert's `--lora`): where the path ends.

The one rule every CLI splits them by: a value that names an existing file or folder is a path even
when it holds a colon (C:\\models\\x.safetensors, a folder named "a:b"); otherwise the text after the last
colon is the scale. Parsing the scale (what numbers are allowed, which error names it) stays with the
caller. No imports beyond the standard library: argparse types of the CLIs' --help use it.
"""
from __future__ import annotations

import os


def split_path_scale(arg: str) -> tuple[str, str | None]:
    """("model.safetensors:0.8") -> ("model.safetensors", "0.8"); ("model.safetensors") -> (..., None)."""
    if ":" not in arg or os.path.exists(arg):
        return arg, None
    path, _, scale = arg.rpartition(":")
    return path, scale
