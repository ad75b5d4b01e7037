"""What a hub id looks like: `owner/name`, told apart from a local path that does not exist. String
checks and one look at the local folders (`os` only), so that config readers (training/config.py) can
tell a hub id from a missing file before any model, download or JAX import (resolving an id:
`convert.sources.resolve_source`)."""
from __future__ import annotations

import os

# what a weights file's name ends in (no hub repository's name does: `is_hub_id`)
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def is_hub_id(source: str) -> bool:
    """Whether `source` is written like a hub id, 'owner/name' (checked where no such path exists). A
    local path is not: one starting with `.`, `/` or `~`, one whose first component is a local folder
    (`runs/mini_typo`: a mistyped path, not worth a trip to the hub), a name ending in a weights file's
    suffix (`models/mm_sd_v15_v2.ckpt`: a missing file)."""
    return (source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not source.lower().endswith(WEIGHT_SUFFIXES) and not os.path.isdir(source.split("/")[0]))
