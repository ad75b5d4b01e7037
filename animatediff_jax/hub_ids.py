"""What a hub id looks like: `owner/name`, told apart from a local path that does not exist. Pure string
checks, no imports, so that config readers (training/config.py) can tell a hub id from a missing file
before any model, download or JAX import (resolving an id: `convert.sources.resolve_source`)."""
from __future__ import annotations

# what a weights file's name ends in (no hub repository's name does: `is_hub_id`)
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def is_hub_id(source: str) -> bool:
    """Whether `source` is written like a hub id, 'owner/name' (checked where no such path exists); a
    name ending in a weights file's suffix (`models/mm_sd_v15_v2.ckpt`) is a missing file, not an id."""
    return source.count("/") == 1 and not source.startswith((".", "/")) and not source.lower().endswith(WEIGHT_SUFFIXES)
