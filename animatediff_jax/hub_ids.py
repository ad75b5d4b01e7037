"""What a hub id looks like: `owner/name`, told apart from a local path that does not exist. String
checks and one look at the local folders (`os` only), so that config readers (training/config.py) can
tell a hub id from a missing file before any model, download or JAX import (resolving an id:
`convert.sources.resolve_source`). Also what a weight variant (`--variant fp16`) and a revision may
be, checked where the flags are parsed."""
from __future__ import annotations

import argparse
import os
import re

# what a weights file's name ends in (no hub repository's name does: `is_hub_id`)
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")
# a weight variant as diffusers names files with it: diffusion_pytorch_model.<variant>.safetensors
VARIANT = r"[A-Za-z0-9_]+"


def variant_name(text: str) -> str:
    """argparse `type=` of `--variant`: a name of letters, digits and '_' (fp16, bf16, non_ema), as
    weights files carry it; '' or 'fp16/../x' named no file and was accepted."""
    if not re.fullmatch(VARIANT, text):
        raise argparse.ArgumentTypeError(f"{text!r}: not a weight variant (letters, digits and '_', e.g. fp16)"
                                         if text else "empty variant")
    return text


def revision_name(text: str) -> str:
    """argparse `type=` of `--revision`: any non-blank branch, tag or commit."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty revision")
    return text


def is_hub_id(source: str) -> bool:
    """Whether `source` is written like a hub id, 'owner/name' (checked where no such path exists). A
    local path is not: one starting with `.`, `/` or `~`, one whose first component is a local folder
    (`runs/mini_typo`: a mistyped path, not worth a trip to the hub), a name ending in a weights file's
    suffix (`models/mm_sd_v15_v2.ckpt`: a missing file)."""
    return (source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not source.lower().endswith(WEIGHT_SUFFIXES) and not os.path.isdir(source.split("/")[0]))
